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


def _plugin(tmp_path, monkeypatch, name: str, ref: str) -> None:
    """An installed distribution (a .dist-info folder on sys.path) declaring editor `name` = `ref`."""
    dist = tmp_path / "kebench_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kebench-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[kebench.editors]\n{name} = {ref}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtin_editors_arrive_through_the_entry_point_group_like_any_plugin(tmp_path, monkeypatch):
    """No table in code: kebench's own editors are the "kebench.editors" entry points its pyproject declares,
    and a third-party package's editor arrives the same way."""
    import tomllib
    from importlib.metadata import entry_points
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    builtin = declared["project"]["entry-points"]["kebench.editors"]
    installed = {ep.name: ep.value for ep in entry_points(group="kebench.editors")}
    assert builtin.items() <= installed.items()  # the install CI made carries them
    (tmp_path / "my_editor.py").write_text(
        "from editors.none import NoneEditor\n\nclass MyEditor(NoneEditor):\n    name = 'mine'\n")
    _plugin(tmp_path, monkeypatch, "mine", "my_editor:MyEditor")
    reg: Registry[type] = Registry("editor", entry_point_group="kebench.editors")
    assert set(reg.names()) == set(builtin) | {"mine"}
    assert reg.get("mine").name == "mine" and reg.get("memit").name == "memit"
    with pytest.raises(ConfigError, match="did you mean 'memit'"):
        reg.get("memt")


def test_an_entry_point_that_does_not_import_is_an_error_on_use_only(tmp_path, monkeypatch):
    _plugin(tmp_path, monkeypatch, "ghost", "no_such_module_xyz:Thing")
    reg: Registry[type] = Registry("editor", entry_point_group="kebench.editors")
    assert "ghost" in reg
    with pytest.raises(ModuleNotFoundError):
        reg.get("ghost")
