"""Running a model and writing what it attends to: the model side of attnstore.

`pipeline` plans a run and feeds images through `extract` (one generate, attention rows captured
through `attnstore.models.capture`), `driver` owns the store, the progress and the interruption of a run,
`distributed` spreads it over dask workers, `pope` and `demo` are runs of their own, `synthetic`
writes stores without a model (tests, benchmarks). Importing this package imports nothing heavy;
`extract` imports torch, so only a running model loads them.
"""
