// Symbol visibility. Everything is built with hidden visibility; OPFORGE_API
// marks the core's public API, which plugins and programs link against.
#pragma once

#define OPFORGE_API __attribute__((visibility("default")))
