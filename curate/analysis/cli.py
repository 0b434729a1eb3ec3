"""The Hydra apps ``curate.report`` and ``curate.inspect``: their config, and their earlier spellings.

Both are Hydra apps like every stage (``key=value`` overrides checked against a dataclass in
struct mode, ``--help``, ``--cfg job``, ``-m``). Their primary config lives in the ConfigStore
(:func:`register_tool`), not under ``configs/``: there ``cluster`` names a config group, and
``cluster=DIR`` must stay the clustering folder (for the same reason these apps never import the
stage modules, which register a ``cluster`` group in the ConfigStore). They only read a finished run and write where
``out`` says, so Hydra writes no ``.hydra/`` and no log file; a sweep's record goes to
``outputs/multirun/<tool>``.

Before, they also took ``--key value`` / ``--key=value`` and, for ``curate.inspect``, a bare
clustering folder as the first argument; :func:`translate_legacy_args` rewrites those into
overrides and says so in one deprecation line on stderr. Hydra's own options pass unchanged.
"""

from __future__ import annotations

import shlex
import sys

from hydra.core.config_store import ConfigStore

__all__ = ["register_tool", "translate_legacy_args"]


def register_tool(name: str, schema: type, summary: str) -> None:
    """Store ``schema`` as ``<name>_schema`` and the primary config ``name`` (the schema, Hydra
    settings: logging to stdout, no output folder of Hydra's own) in Hydra's ConfigStore.

    Args:
        name: the tool (``report``): ``@hydra.main(config_path=None, config_name=name)``.
        schema: its settings dataclass.
        summary: one line for ``--help``.
    """
    cs = ConfigStore.instance()
    cs.store(name=f"{name}_schema", node=schema)
    hydra = {
        "output_subdir": None,
        "job": {"name": name, "chdir": False},
        "run": {"dir": "."},
        "sweep": {"dir": f"outputs/multirun/{name}", "subdir": "${hydra.job.num}"},
        "help": {
            "header": f"python -m curate.{name}: {summary}\nusage: python -m curate.{name} key=value ...\n",
            # the choice fields and their options (from the Enums); the caller registers the resolver
            # (curate.conf.register_help: the stage layer, above this one)
            "footer": "${curate_choices:}",
        },
    }
    defaults = [f"{name}_schema", {"override hydra/job_logging": "stdout"}, "_self_"]
    cs.store(name=name, node={"defaults": defaults, "hydra": hydra})


# Hydra's options (and ``--traceback``, curate.core.errors'): left as they are
_HYDRA_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-m", "--multirun", "--resolve", "--traceback"}
_HYDRA_VALUED = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd"}
_HYDRA_VALUED |= {"--config-dir", "--experimental-rerun", "-sc", "--shell-completion"}
_INFO = {"--info", "-i"}  # takes an optional topic
_INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def translate_legacy_args(
    argv: list[str] | None = None, positional: str | None = None, prog: str = "python -m curate.report"
) -> list[str]:
    """Rewrite ``--key value``, ``--key=value`` and one bare ``positional`` argument into
    ``key=value`` overrides, in place (``argv`` default ``sys.argv``, whose first item is the
    program), printing one deprecation line when something was rewritten.

    Returns:
        ``argv``, rewritten.
    """
    args = sys.argv if argv is None else argv
    rest, out, old, new = list(args[1:]), [], [], []
    while rest:
        arg = rest.pop(0)
        flag = arg.split("=", 1)[0]
        if flag in _HYDRA_FLAGS or flag in _HYDRA_VALUED or flag in _INFO:
            out.append(arg)
            topic = flag in _INFO and bool(rest) and rest[0] in _INFO_TOPICS
            if rest and "=" not in arg and (flag in _HYDRA_VALUED or topic):
                out.append(rest.pop(0))
        elif arg.startswith("--") and len(arg) > 2:
            key, sep, value = arg[2:].partition("=")
            if not sep and rest:
                value = rest.pop(0)
                old.append(f"{arg} {value}")
            else:
                old.append(arg)
            out.append(f"{key.replace('-', '_')}={value}")
            new.append(out[-1])
        elif positional is not None and "=" not in arg and not arg.startswith("-"):
            out.append(f"{positional}={arg}")
            old.append(arg)
            new.append(out[-1])
            positional = None
        else:
            out.append(arg)
    if old:
        was, now = " ".join(map(shlex.quote, old)), " ".join(map(shlex.quote, new))
        print(f"deprecated: {prog} {was}: write {now} (key=value, as every stage)", file=sys.stderr, flush=True)
    args[1:] = out
    return args
