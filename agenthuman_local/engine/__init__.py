"""The avatar engine: audio in, face parameters, rendered frames out (SPEC §9).

`engine.Engine` is what the app holds; `audio` (resampling, exact per-frame windows, log-mel),
`driver` (audio → parameters), `procedural*` (the shipped characters) and `photo*` (uploaded
photos) share the parameter space of `base`. Importing this package imports nothing heavy:
`base` stays torch-free for the API layer.
"""
