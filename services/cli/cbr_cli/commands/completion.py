"""`cbr completion bash|zsh`: a shell completion script for groups, commands, options and option choices, made
from the parser itself so it never lags behind the commands."""
from __future__ import annotations

import argparse
import re

SHELLS = ("bash", "zsh")
CHOICES = re.compile(r"\{([\w,-]+)\}")  # the metavar arguments.add_enum gives an option: {disk,server,...}

INSTALL = {
    "bash": "# bash: eval \"$(cbr completion bash)\" in ~/.bashrc, or save it as "
            "~/.local/share/bash-completion/completions/cbr",
    "zsh": "# zsh: eval \"$(cbr completion zsh)\" in ~/.zshrc (after compinit), or save it as _cbr in a folder "
           "of $fpath",
}


def register(groups, common) -> None:
    commands = groups.add_parser("completion", help="print a shell completion script (bash or zsh)",
                                 description="print a shell completion script: eval \"$(cbr completion bash)\"")
    commands.add_argument("shell", choices=SHELLS)
    commands.set_defaults(handler=print_script, offline=True, fields={})


def print_script(args, client, out) -> int:
    from cbr_cli.main import build_parser  # the whole parser, which registers this module: import late
    print(script(build_parser(), args.shell))
    return 0


def _visible(subparsers_action) -> list[str]:
    return [action.metavar or action.dest for action in subparsers_action._choices_actions]


def _subparsers(parser: argparse.ArgumentParser):
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _options(parser: argparse.ArgumentParser) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Its long options (shown ones), the choices of those that have any, and those that take a value."""
    flags, choices, valued = [], {}, []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flags += [o for o in action.option_strings if o.startswith("--")]
        if action.nargs != 0:
            valued += action.option_strings
            names = list(action.choices) if action.choices else []
            match = CHOICES.fullmatch(action.metavar or "") if isinstance(action.metavar, str) else None
            if match:
                names = match[1].split(",")
            if names:
                for option in action.option_strings:
                    choices[option] = names
    return flags, choices, valued


def completion_table(parser: argparse.ArgumentParser) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """'GROUP/COMMAND' -> words to offer; 'GROUP/COMMAND/--OPTION' -> its choices; the global valued options."""
    words: dict[str, list[str]] = {}
    values: dict[str, list[str]] = {}
    top_flags, _, top_valued = _options(parser)
    groups = _subparsers(parser)
    words["/"] = _visible(groups) + top_flags
    for group in _visible(groups):
        group_parser = groups.choices[group]
        commands = _subparsers(group_parser)
        if commands is None:  # a command without verbs (completion)
            flags, choices, _ = _options(group_parser)
            words[f"{group}/"] = [*(group_parser._actions[-1].choices or []), *flags]
            continue
        words[f"{group}/"] = _visible(commands)
        for command in _visible(commands):
            flags, choices, _ = _options(commands.choices[command])
            words[f"{group}/{command}"] = flags
            for option, names in choices.items():
                values[f"{group}/{command}/{option}"] = names
    return words, values, top_valued


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    words, values, valued = completion_table(parser)
    cases = "\n".join(f'        "{key}") words="{" ".join(found)}" ;;' for key, found in sorted(words.items()))
    value_cases = "\n".join(f'        "{key}") words="{" ".join(found)}" ;;' for key, found in sorted(values.items()))
    skip = "|".join(sorted(valued))
    body = f"""{INSTALL[shell]}
_cbr_complete() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local group="" command="" word words="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            {skip}) ((i++)); continue ;;
            -*) continue ;;
        esac
        if [[ -z "$group" ]]; then group="$word"; elif [[ -z "$command" ]]; then command="$word"; fi
    done
    case "$group/$command/$prev" in
{value_cases}
    esac
    if [[ -z "$words" ]]; then
        case "$group/$command" in
{cases}
        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _cbr_complete cbr"""
    if shell == "zsh":
        return f"#compdef cbr\nautoload -U +X bashcompinit && bashcompinit\n{body}"
    return body
