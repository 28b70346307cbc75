"""One module per pipeline stage; each stage is a job (generator) over the project store.

Stages read their inputs from the project by slot, compute, and write one new run whose
``inputs`` record the runs they read (so later changes upstream mark it stale).
"""
