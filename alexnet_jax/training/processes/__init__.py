"""The processes of a run: the coordination of a multi-process run and its lost peers
(`multihost`), the thin parent process that reports JAX's abort (`supervisor`), and the stop
signals that end a run with a checkpoint (`preemption`)."""
