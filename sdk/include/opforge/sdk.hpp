// Everything an op plugin includes: the core API, the plugin entry points,
// and kernel helpers (dtype dispatch, xtensor views, parallel loops).
#pragma once

#include "opforge/opforge.hpp"
#include "opforge/sdk/broadcast.hpp"
#include "opforge/sdk/checks.hpp"
#include "opforge/sdk/cpu.hpp"
#include "opforge/sdk/dispatch.hpp"
#include "opforge/sdk/parallel.hpp"
#include "opforge/sdk/plugin.hpp"
#include "opforge/sdk/views.hpp"
