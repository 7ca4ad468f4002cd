"""User code a recipe names: modules or .py files that register factories, each imported once per process."""

import importlib
import importlib.util
import sys
from pathlib import Path

from mnist_kit.errors import UserError

_imported: dict[str, str] = {}  # what was imported (a resolved .py path or a module name) -> its module name


def import_plugins(plugins: list[str], base: Path) -> None:
    """Import the modules a recipe names (module names, or .py paths relative to `base`), once each per process:
    a second recipe, sweep point or fallback naming the same plugin finds it imported already."""
    for plugin in plugins:
        if not isinstance(plugin, str):
            raise UserError(f"plugins: expected module names or .py paths, got {plugin!r}")
        if plugin.endswith(".py"):
            path = Path(plugin) if Path(plugin).is_absolute() else Path(base) / plugin
            if not path.is_file():
                raise UserError(f"plugin {plugin!r}: no such file {path}")
            import_once(str(path.resolve()), plugin, import_file, path.resolve())
        else:
            import_once(plugin, plugin, lambda name: importlib.import_module(name).__name__, plugin)


def import_once(key: str, shown: str, load, argument) -> None:
    """`load(argument)` unless `key` was imported before; anything it raises, SystemExit included, is one UserError
    naming the plugin as the recipe wrote it (`shown`)."""
    if key in _imported:
        return
    try:
        _imported[key] = load(argument)
    except UserError:
        raise
    except (Exception, SystemExit) as error:
        what = f"SystemExit({error.code!r})" if isinstance(error, SystemExit) else f"{type(error).__name__}: {error}"
        raise UserError(f"plugin {shown!r} does not import: {what}") from error


def import_file(path: Path) -> str:
    """Import a .py file as module `mnist_kit_plugin_<stem>`; a failed import leaves no half-made module behind."""
    module_name = f"mnist_kit_plugin_{path.stem}"
    if module_name in sys.modules:  # another file with the same name: keep both
        module_name += f"_{len(_imported)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module_name
