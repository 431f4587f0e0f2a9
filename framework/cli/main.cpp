#include <iostream>
#include <opforge/opforge.hpp>
int main() {
  for (auto& p : opforge::loaded_plugins()) std::cout << p.name << " " << p.file << "\n";
  for (auto& f : opforge::plugin_load_failures()) std::cout << "FAIL " << f.reason << "\n";
  auto add = opforge::op("elementwise.add");
  auto a = opforge::Tensor::from_values({1, 2, 3}).requires_grad_();
  auto b = opforge::Tensor::from_values({4, 5, 6});
  auto c = add({a, b});
  std::cout << c << "\n";
}
