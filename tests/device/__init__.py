"""Device arrays: every op under the strict CUDA simulator, CuPy and streams, the CUDA
launchers, PTX, fuzzing and errors on the device."""
