// A small JSON writer for the program's --json output (values are written, never parsed).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace opforge_cli {

class Json {
 public:
  static Json object() { return Json(Kind::Object); }
  static Json array() { return Json(Kind::Array); }
  Json(const std::string& s) : kind_(Kind::Raw), raw_(quote(s)) {}  // NOLINT
  Json(const char* s) : Json(std::string(s)) {}                      // NOLINT
  Json(double v) : kind_(Kind::Raw), raw_(number(v)) {}              // NOLINT
  Json(int v) : kind_(Kind::Raw), raw_(std::to_string(v)) {}         // NOLINT
  Json(long v) : kind_(Kind::Raw), raw_(std::to_string(v)) {}        // NOLINT
  Json(bool v) : kind_(Kind::Raw), raw_(v ? "true" : "false") {}     // NOLINT

  Json& set(const std::string& key, Json v) {
    members_.emplace_back(key, std::move(v));
    return *this;
  }
  Json& push(Json v) {
    members_.emplace_back(std::string(), std::move(v));
    return *this;
  }
  std::string dump() const {
    if (kind_ == Kind::Raw) return raw_;
    std::string s(1, kind_ == Kind::Object ? '{' : '[');
    for (std::size_t i = 0; i < members_.size(); ++i) {
      if (i) s += ", ";
      if (kind_ == Kind::Object) s += quote(members_[i].first) + ": ";
      s += members_[i].second.dump();
    }
    return s + (kind_ == Kind::Object ? '}' : ']');
  }

  static std::string quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
          if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += c;
          }
      }
    }
    return out + "\"";
  }
  static std::string number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
  }

 private:
  enum class Kind { Object, Array, Raw };
  explicit Json(Kind k) : kind_(k) {}
  Kind kind_;
  std::string raw_;
  std::vector<std::pair<std::string, Json>> members_;
};

}  // namespace opforge_cli
