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


def test_builtin_editors_come_from_entry_points():
    from kebench.editor import EDITORS

    assert {"none", "ft"} <= set(EDITORS.names())
    assert EDITORS.get("ft").name == "ft"
