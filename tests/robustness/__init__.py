"""Bad inputs, fuzzing, threads, memory, huge pages, sizes past 32 bits and the kernels' disk cache."""
