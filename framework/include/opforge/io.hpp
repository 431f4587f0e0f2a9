// Saving and loading tensors in NumPy's own formats: .npy for one tensor, .npz
// for several by name (a model's parameters). NumPy reads what these write
// (np.load), and these read what np.save and np.savez write.
//
//   opforge::save_npz("model.npz", {{"W1", W1}, {"b1", b1}});
//   for (auto& [name, t] : opforge::load_npz("model.npz")) ...
//
// Data is written little-endian in row-major order, whatever the tensor's
// strides; a loaded tensor is contiguous, owns its memory and does not require
// grad. float32, float64, int64 and bool, the dtypes opforge has; a file of any
// other dtype (int32, float16, big-endian...) is refused with a message that
// names it and says how to convert it in NumPy. A file is written to a
// temporary name beside it and renamed at the end: an existing file is replaced
// whole or not at all.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "opforge/export.hpp"
#include "opforge/tensor.hpp"

namespace opforge {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

/// Writes t to `path` as a .npy file (format 1.0). Throws Error when the file
/// cannot be written (with the system's reason), ValueError for an undefined t.
OPFORGE_API void save_npy(const std::string& path, const Tensor& t);
/// Reads a .npy file (formats 1.0, 2.0 and 3.0; C or Fortran order). Throws Error
/// when it cannot be read, ValueError when it is no .npy file, is truncated,
/// or holds a dtype opforge does not have.
OPFORGE_API Tensor load_npy(const std::string& path);

/// Writes the tensors to `path` as an .npz archive, each under "<name>.npy", as
/// np.savez(path, name=...) does (no compression). Names must be non-empty,
/// unique, and contain no '/' or '\\'. The archive is refused past 4 GiB
/// (no ZIP64 here): save such tensors one by one with save_npy.
OPFORGE_API void save_npz(const std::string& path, const NamedTensors& tensors);
/// Reads an .npz archive written by np.savez or save_npz: its tensors in the
/// archive's order, named without ".npy". An archive written by
/// np.savez_compressed is refused (its members are deflated): re-save it with
/// np.savez.
OPFORGE_API NamedTensors load_npz(const std::string& path);

}  // namespace opforge
