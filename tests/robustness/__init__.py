"""Bad inputs, fuzzing, threads, memory, huge pages and sizes past 32 bits."""
