import pytest

from kebench.errors import ConfigError
from kebench.registry import Registry


def test_register_get_and_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", 1)

    @reg.register("beta")
    def beta():  # decorator form returns the object
        return 2

    assert reg.get("alpha") == 1 and reg.get("beta") is beta
    assert reg.names() == ["alpha", "beta"]
    with pytest.raises(ConfigError, match="did you mean 'alpha'"):
        reg.get("alpah")


def test_duplicate_name_rejected():
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    reg.register("a", 1)  # same object again is fine (re-import)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", 2)


def test_builtin_editors_need_no_package_metadata(monkeypatch):
    """A checkout run as `python -m kebench` without `pip install` has no entry points: built-ins still resolve."""
    import importlib.metadata

    from kebench.editor import EDITORS

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **_: [])
    reg: Registry[type] = Registry("editor", entry_point_group="kebench.editors", builtins=EDITORS.builtins)
    assert reg.names() == ["alphaedit", "ft", "meg", "memit", "none"]
    assert reg.get("ft").name == "ft" and reg.get("memit") is EDITORS.get("memit")
    with pytest.raises(ConfigError, match="did you mean 'memit'"):
        reg.get("memt")


def test_builtin_reference_that_does_not_import_is_an_error_on_use_only():
    reg: Registry[int] = Registry("widget", builtins={"ghost": "no_such_module_xyz:Thing"})
    assert "ghost" in reg
    with pytest.raises(ModuleNotFoundError):
        reg.get("ghost")
