// The opforge core API: tensors, ops, autograd, plugins, threads.
#pragma once

#include "opforge/autograd.hpp"
#include "opforge/blas.hpp"
#include "opforge/broadcast.hpp"
#include "opforge/dims.hpp"
#include "opforge/dlpack.hpp"
#include "opforge/dtype.hpp"
#include "opforge/error.hpp"
#include "opforge/function.hpp"
#include "opforge/io.hpp"
#include "opforge/op.hpp"
#include "opforge/plugins.hpp"
#include "opforge/tensor.hpp"
#include "opforge/tensor_list.hpp"
#include "opforge/threads.hpp"
#include "opforge/version.hpp"
