// A "vendor" library that a plugin links (lt_vendor, vendor.cpp): memory it
// allocates and frees, and a static table. Loaded by the plugin's dlopen and
// unmapped by its dlclose, so what it provides must keep the plugin loaded.
#include <cstdlib>

extern "C" {
__attribute__((visibility("default"))) double lt_vendor_table[4] = {10, 20, 30, 40};
__attribute__((visibility("default"))) void* lt_vendor_alloc(std::size_t bytes) { return std::malloc(bytes); }
__attribute__((visibility("default"))) void lt_vendor_free(void* data, void*) { std::free(data); }
}
