"""Counting the calls a model makes into a kernel module, to prove the dispatch wiring."""


def spy_on(monkeypatch, module, names):
    """Wrap module.<name> for each name so that each call appends its name to the list
    returned (the real function still runs)."""
    calls = []
    for name in names:
        real = getattr(module, name)

        def spy(*args, _real=real, _name=name):
            calls.append(_name)
            return _real(*args)

        monkeypatch.setattr(module, name, spy)
    return calls
