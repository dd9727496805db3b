"""Pure decisions of the rules service: conditions, operators, templates, rule validation, evaluation.

Nothing here does I/O; the store, the worker and the servicer build on it.
"""
