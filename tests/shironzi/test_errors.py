from __future__ import annotations

import inspect

import shironzi.errors as errors


def _error_classes() -> list[type[errors.ShironziError]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ShironziError)]


def test_every_error_has_an_http_status_and_a_stable_code() -> None:
    classes = _error_classes()
    assert len(classes) > 10
    for cls in classes:
        assert 400 <= cls.status < 600, cls
        assert cls.code and cls.code == cls.code.lower() and " " not in cls.code, cls


def test_codes_are_unique_across_the_hierarchy() -> None:
    codes = [c.code for c in _error_classes()]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_module_disabled_names_the_module() -> None:
    err = errors.ModuleDisabledError("t_1", "churn_prediction")
    assert err.status == 403 and err.code == "module_disabled"
    assert err.to_dict()["details"] == {"tenant": "t_1", "module": "churn_prediction"}
