"""What a run keeps on disk and gets back: the Orbax checkpoints (`checkpointing`), resuming past
damaged ones (`recovery`), the checkpoint set aside while its step is written again (`aside`),
saving only finite parameters with the run's progress (`saving`), and one run per workdir
(`workdir_lock`)."""
