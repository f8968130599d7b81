from __future__ import annotations

from pathlib import Path

import pytest

from harness.tokens import fake_token
from telegram_gateway.config import BotConfig
from telegram_gateway.errors import ConfigError
from telegram_gateway.routing import Router, command_of, load_routes, parse_routes
from telegram_gateway.updates import describe

pytestmark = pytest.mark.unit

BOTS = [
    BotConfig(bot_id=111, token=fake_token(111), name="support"),
    BotConfig(bot_id=222, token=fake_token(222)),
]


def message(bot_id=111, chat_id=-100, chat_type="supergroup", text="hello", kind="message"):
    update = {
        "update_id": 1,
        kind: {"chat": {"id": chat_id, "type": chat_type}, "from": {"id": 7}, "text": text},
    }
    return describe(bot_id, update)


def router(rules) -> Router:
    return Router(parse_routes({"routes": rules}, BOTS))


def subjects(r: Router, info) -> list[str]:
    """The subjects ``r`` copies ``info`` to, in order."""
    return [subject for _, subject in r.targets(info)]


def test_command_of():
    assert command_of("/ask") == "/ask"
    assert command_of("/ask what") == "/ask"
    assert command_of("/ask@helper_bot what") == "/ask"
    assert command_of("/ask\nmore") == "/ask"
    assert command_of("/asking") == "/asking"
    assert command_of("ask /ask") is None
    assert command_of("/") is None
    assert command_of("") is None
    assert command_of(None) is None


def test_all_conditions_are_anded_and_lists_are_any_of():
    r = router(
        [
            {
                "name": "ask",
                "match": {
                    "bot": "support",
                    "update_type": ["message", "edited_message"],
                    "chat_id": [-100, -200],
                    "chat_type": "supergroup",
                    "command": "/ask",
                },
                "subjects": ["agents.helper.inbox"],
            }
        ]
    )
    assert subjects(r, message(text="/ask hi")) == ["agents.helper.inbox"]
    assert subjects(r, message(text="/ask@any_bot hi", chat_id=-200)) == ["agents.helper.inbox"]
    assert subjects(r, message(text="/ask", kind="edited_message")) == ["agents.helper.inbox"]
    assert subjects(r, message(text="/asking hi")) == []
    assert subjects(r, message(text="hi /ask")) == []
    assert subjects(r, message(text="/ask", chat_id=-300)) == []
    assert subjects(r, message(text="/ask", bot_id=222)) == []
    assert subjects(r, message(text="/ask", chat_type="group")) == []
    assert subjects(r, message(text="/ask", kind="channel_post")) == []


def test_no_conditions_match_everything_and_regex_searches_text():
    r = router(
        [
            {"name": "all", "subjects": "audit.all"},
            {"name": "urgent", "match": {"text_regex": "(?i)urgent"}, "subjects": ["a.urgent"]},
            {"name": "by-id", "match": {"bot": 222}, "subjects": ["a.two", "audit.all"]},
        ]
    )
    assert subjects(r, message(text="so URGENT")) == ["audit.all", "a.urgent"]
    assert subjects(r, message(text="calm", bot_id=222)) == ["audit.all", "a.two"]
    poll = describe(111, {"update_id": 2, "poll": {"id": "x"}})
    assert subjects(r, poll) == ["audit.all"]  # no text: the regex does not match
    assert [route.name for route, _ in r.targets(message(text="urgent"))] == ["all", "urgent"]


def test_empty_or_missing_file_means_no_routes(tmp_path: Path):
    assert len(load_routes(None, BOTS)) == 0
    empty = tmp_path / "routes.yml"
    empty.write_text("")
    assert len(load_routes(empty, BOTS)) == 0
    empty.write_text("routes: []\n")
    assert len(load_routes(empty, BOTS)) == 0


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([{"name": "a", "match": {"chat_id": "x"}, "subjects": ["s"]}], "match.chat_id"),
        ([{"name": "a", "match": {"chat_id": True}, "subjects": ["s"]}], "match.chat_id"),
        ([{"name": "a", "match": {"command": "ask"}, "subjects": ["s"]}], "match.command"),
        ([{"name": "a", "match": {"text_regex": "("}, "subjects": ["s"]}], "match.text_regex"),
        ([{"name": "a", "match": {"chat_type": "room"}, "subjects": ["s"]}], "match.chat_type"),
        ([{"name": "a", "match": {"bot": "nobody"}, "subjects": ["s"]}], "match.bot"),
        ([{"name": "a", "match": {"update_type": "Msg!"}, "subjects": ["s"]}], "match.update_type"),
        ([{"name": "a", "match": {"chat_id": []}, "subjects": ["s"]}], "match.chat_id"),
        ([{"name": "a", "match": {"chatid": 1}, "subjects": ["s"]}], "match.chatid"),
        ([{"name": "a", "match": ["x"], "subjects": ["s"]}], "match:"),
        ([{"name": "a", "subjects": []}], "subjects"),
        ([{"name": "a", "subjects": ["agents.*"]}], "subjects"),
        ([{"name": "a", "subjects": ["a b"]}], "subjects"),
        ([{"name": "a", "subjects": ["telegram.in.1.message"]}], "telegram.in"),
        ([{"match": {}, "subjects": ["s"]}], "name"),
        ([{"name": "a", "subjects": ["s"], "extra": 1}], "extra"),
        (["just a string"], "mapping"),
    ],
)
def test_invalid_rules_name_rule_and_field(rules, expected):
    good = {"name": "first", "subjects": ["ok.subject"]}
    with pytest.raises(ConfigError) as info:
        parse_routes({"routes": [good, *rules]}, BOTS, source="GATEWAY_ROUTES_FILE r.yml")
    text = str(info.value)
    assert text.startswith("GATEWAY_ROUTES_FILE r.yml: rule 2")
    assert expected in text
    if isinstance(rules[0], dict) and "name" in rules[0]:
        assert "'a'" in text


def test_duplicate_names_and_bad_documents(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"rule 2 \('x'\): name"):
        parse_routes({"routes": [{"name": "x", "subjects": "a"}] * 2}, BOTS)
    with pytest.raises(ConfigError, match="top level"):
        parse_routes(["routes"], BOTS)
    with pytest.raises(ConfigError, match="top level"):
        parse_routes({"routes": [], "rules": []}, BOTS)
    path = tmp_path / "bad.yml"
    path.write_text("routes: [\n")
    with pytest.raises(ConfigError, match=f"GATEWAY_ROUTES_FILE {path}: not valid YAML"):
        load_routes(path, BOTS)
    with pytest.raises(ConfigError, match="cannot read"):
        load_routes(tmp_path / "missing.yml", BOTS)


def test_readme_example_parses(tmp_path: Path):
    """The example in README.md's "Routing rules" section is a valid file."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Routing rules", 1)[1]
    example = section.split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "routes.yml"
    path.write_text(example)
    routes = load_routes(path, BOTS)
    assert len(routes) >= 2


def test_store_files_is_a_boolean_per_rule():
    bots = [BotConfig(bot_id=1, token=fake_token(1))]
    routes = parse_routes(
        {
            "routes": [
                {"name": "a", "subjects": ["agents.a"], "store_files": True},
                {"name": "b", "subjects": ["agents.b"]},
            ]
        },
        bots,
    )
    assert [route.store_files for route in routes] == [True, False]
    with pytest.raises(ConfigError, match=r"rule 1 \('a'\): store_files: must be true or false"):
        parse_routes({"routes": [{"name": "a", "subjects": ["x"], "store_files": "yes"}]}, bots)
