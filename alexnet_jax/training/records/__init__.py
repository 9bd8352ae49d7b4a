"""What a run records as it goes: metrics.jsonl and TensorBoard (`metrics_writer`), its training
and evaluation lines (`run_log`), its pictures (`plots`), the time it has left
(`remaining_time`), each epoch's mean training error (`epoch_means`) and a profiler trace of
chosen steps (`profiling`)."""
