"""Writes the .npy/.npz files tests/test_io.cpp reads, with NumPy (1.24.2 made
the committed ones). Not run by the build or the tests: the files are committed.

    cd tests/data/npy && /usr/bin/python3 make_fixtures.py
"""
import numpy as np

np.save("f64_2x3.npy", np.arange(6, dtype=np.float64).reshape(2, 3) * 0.5 - 1)
np.save("f32_fortran_2x3.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3) + 0.25))
np.save("i64_scalar.npy", np.array(-7, dtype=np.int64))
np.save("bool_4.npy", np.array([True, False, False, True]))
np.save("f32_empty_0x3.npy", np.zeros((0, 3), dtype=np.float32))
np.save("i32_3.npy", np.array([1, 2, 3], dtype=np.int32))
np.save("f64_big_endian_2.npy", np.array([1.5, -2.0], dtype=">f8"))
np.savez("model.npz", W=np.arange(6, dtype=np.float64).reshape(3, 2) / 8,
         b=np.array([0.5, -0.5], dtype=np.float32), step=np.array(12))
np.savez_compressed("compressed.npz", W=np.ones((2, 2)))
