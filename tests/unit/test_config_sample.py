"""etc/dragonflow.ini.sample documents every option of dragonflow/conf.py, with its help."""
import re
from pathlib import Path

import pytest

from dragonflow import conf

SAMPLE = Path(__file__).resolve().parents[2] / 'etc' / 'dragonflow.ini.sample'
REGENERATE = 'regenerate it: .venv/bin/python -m dragonflow.conf > etc/dragonflow.ini.sample'


def sections() -> dict[str, str]:
    """Section name -> its text."""
    parts = re.split(r'^\[([^\]]+)\]\s*$', SAMPLE.read_text(), flags=re.M)
    return {name: body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def comment_text(body: str) -> str:
    """The section's comments as one line of words (help texts are wrapped)."""
    lines = [line.lstrip('#').strip() for line in body.splitlines() if line.startswith('#')]
    return ' '.join(' '.join(lines).split())


OPTIONS = [(group, opt) for group, opts in conf.list_opts() for opt in opts]


@pytest.mark.parametrize('group,opt', OPTIONS, ids=[f'{g}.{o.name}' for g, o in OPTIONS])
def test_sample_has_option_with_help(group, opt):
    text = sections()
    assert group in text, f'[{group}] missing from {SAMPLE.name}; {REGENERATE}'
    assert re.search(rf'^#?{re.escape(opt.name)} =( |$)', text[group], flags=re.M), \
        f'{group}.{opt.name} missing from {SAMPLE.name}; {REGENERATE}'
    assert ' '.join(opt.help.split()) in comment_text(text[group]), \
        f'help of {group}.{opt.name} out of date in {SAMPLE.name}; {REGENERATE}'


def test_sample_is_what_the_generator_writes():
    assert SAMPLE.read_text() == conf.sample(), f'{SAMPLE.name} is stale; {REGENERATE}'
