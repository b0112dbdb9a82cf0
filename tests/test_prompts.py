"""Prompt templates: sandboxed Jinja2, and a fast path for plain templates that renders the same text."""

from __future__ import annotations

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from luopan.prompts import PromptTemplate, TemplateRenderError
from luopan_mcq.layouts import LAYOUTS

VARIABLES = {
    "question": "  Which one {is} {{not}} a %s fruit?\n",
    "A": "apple",
    "B": "{0}",
    "C": "100%",
    "D": "}{",
    "choices": ["apple", "{0}", "100%", "}{"],
    "options": [("A", "apple"), ("B", "{0}"), ("C", "100%"), ("D", "}{")],
    "labels": ["A", "B", "C", "D"],
    "subject": "food_science",
    "subject_name": "食品科学",
    "description": "以下是关于食品科学的单项选择题。\n\n",
    "n": 3,
}

JINJA = ImmutableSandboxedEnvironment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined)

PLAIN = [
    *(
        getattr(layout, name)
        for layout in LAYOUTS.values()
        for name in ("description", "question", "answer_prefix", "chat_prompt")
    ),
    "",
    "{{question}}{{A}}",
    "{ literal braces } {{ B }} {{ D }}",
    "{{ choices[3] }}|{{ question.strip() }}|{{ n }}|\n",
]

NOT_PLAIN = [
    "a constant {{ '{' }}",
    "{% for label, text in options %}{{ label }}. {{ text }}\n{% endfor %}",
    "{{ question | trim }}",
    "{% set x = 1 %}{{ x }}{{ A }}",
    "{{ labels | join('、') }}",
    "{% if n > 2 %}many{% endif %}",
    "{{ range(n) | list }}",
]


@pytest.mark.parametrize("source", PLAIN + NOT_PLAIN)
def test_renders_exactly_what_jinja_renders(source):
    assert PromptTemplate("t", source).render(VARIABLES) == JINJA.from_string(source).render(VARIABLES)


def test_default_templates_take_the_fast_path():
    for source in PLAIN:
        assert PromptTemplate("t", source).is_plain, source
    for source in NOT_PLAIN:
        assert not PromptTemplate("t", source).is_plain, source


def test_a_trailing_newline_is_kept():
    assert PromptTemplate("d", "header\n\n").render({}) == "header\n\n"


@pytest.mark.parametrize(
    "source", ["{{ Question }}", "{{ E }}", "{{ choices[7] }}", "{% for x in nope %}{% endfor %}"]
)
def test_an_undefined_variable_is_an_error_naming_the_template(source):
    with pytest.raises(TemplateRenderError, match="template 'question'"):
        PromptTemplate("question", source).render(VARIABLES)


@pytest.mark.parametrize(
    "source",
    [
        "{{ question.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ labels.append('E') }}",  # the variables are shared: a template cannot change them
    ],
)
def test_a_template_cannot_reach_python_internals_or_change_its_variables(source):
    with pytest.raises(TemplateRenderError, match="SecurityError|undefined"):
        PromptTemplate("question", source).render(VARIABLES)


def test_a_syntax_error_is_reported_at_construction():
    with pytest.raises(ValueError, match="template 'question' does not compile"):
        PromptTemplate("question", "{{ question ")
