"""The methods beyond text and single media: albums, locations, venues, contacts, polls, dice,
edits of captions / media / keyboards, bulk deletes, pins, reactions, inline answers, chat
members — their validation texts, their rate limits, their results."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.emulator import BotHandle, encode_multipart, private_message, raw_request

pytestmark = pytest.mark.integration

USER = 4242
GROUP = -1001000000001
URL = "https://example.org/"


@pytest.fixture
def chats(bot: BotHandle) -> BotHandle:
    bot.chat(USER, "private", first_name="Ann")
    bot.chat(GROUP, "supergroup", title="Team")
    return bot


def photos(count: int) -> list[dict[str, Any]]:
    return [{"type": "photo", "media": f"{URL}{n}.jpg"} for n in range(count)]


class TestMediaGroup:
    def test_album_messages_share_a_group_id(self, chats: BotHandle) -> None:
        media = [
            {"type": "photo", "media": URL + "a.jpg", "caption": "<b>A</b>", "parse_mode": "HTML"},
            {"type": "video", "media": URL + "b.mp4", "width": 1280, "height": 720},
        ]
        first, second = chats.ok("sendMediaGroup", chat_id=USER, media=media)
        assert first["media_group_id"] == second["media_group_id"]
        assert second["message_id"] == first["message_id"] + 1
        assert first["caption"] == "A" and first["caption_entities"][0]["type"] == "bold"
        assert len(first["photo"]) == 3 and second["video"]["width"] == 1280
        (record,) = chats.sent(method="sendMediaGroup")
        assert [m["message_id"] for m in record["result"]] == [1, 2]

    def test_attached_uploads(self, chats: BotHandle) -> None:
        media = [
            {"type": "document", "media": "attach://one"},
            {"type": "document", "media": "attach://two"},
        ]
        body, content_type = encode_multipart(
            {"chat_id": str(USER), "media": json.dumps(media)},
            {"one": ("a.txt", b"first", "text/plain"), "two": ("b.txt", b"second", "text/plain")},
        )
        status, _, raw = raw_request(
            chats.emu.port,
            "POST",
            f"/bot{chats.token}/sendMediaGroup",
            body,
            {"Content-Type": content_type},
        )
        result = json.loads(raw)["result"]
        assert status == 200
        assert [m["document"]["file_name"] for m in result] == ["a.txt", "b.txt"]
        assert [m["document"]["file_size"] for m in result] == [5, 6]

    @pytest.mark.parametrize(
        ("media", "description"),
        [
            (None, 'Bad Request: parameter "media" is required'),
            ("{not json", "Bad Request: can't parse media JSON object"),
            ({"type": "photo"}, "Bad Request: expected an Array of InputMedia"),
            ([], "Bad Request: there are no messages to send"),
            (photos(11), "Bad Request: too many messages to send as an album"),
            (["x"], "Bad Request: can't parse InputMedia: expected an Object"),
            ([{"type": "photo"}], "Bad Request: can't parse InputMedia: media not found"),
            (
                [{"type": "animation", "media": URL + "a.gif"}],
                "Bad Request: can't parse InputMedia: type \"animation\" can't be used in "
                "sendMediaGroup",
            ),
            (
                [{"type": "sticker", "media": URL + "a.webp"}],
                'Bad Request: can\'t parse InputMedia: type "sticker" is unsupported',
            ),
            (
                [*photos(1), {"type": "document", "media": URL + "a.pdf"}],
                "Bad Request: document can't be mixed with other media types",
            ),
        ],
    )
    def test_validation(self, chats: BotHandle, media: Any, description: str) -> None:
        params = {"chat_id": USER} if media is None else {"chat_id": USER, "media": media}
        assert chats.error("sendMediaGroup", **params)[:2] == (400, description)
        assert chats.sent() == []

    def test_an_album_counts_per_item_all_or_nothing(self, chats: BotHandle) -> None:
        chats.ok("sendMediaGroup", chat_id=GROUP, media=photos(10))
        chats.ok("sendMediaGroup", chat_id=GROUP, media=photos(9))
        status, description, _ = chats.error("sendMediaGroup", chat_id=GROUP, media=photos(2))
        assert status == 429 and description.startswith("Too Many Requests: retry after ")
        assert len(chats.ok("sendMessage", chat_id=GROUP, text="20th")["text"]) == 4
        assert chats.error("sendMessage", chat_id=GROUP, text="21st")[0] == 429
        assert chats.emu.chats(chats.id)[1]["last_message_id"] == 20


class TestLocationsContactsDice:
    def test_location_and_venue(self, chats: BotHandle) -> None:
        chats.emu.set_limits(enabled=False)  # two sends to one private chat
        location = chats.ok(
            "sendLocation", chat_id=USER, latitude="52.52", longitude=13.405, live_period=120
        )["location"]
        assert location == {"latitude": 52.52, "longitude": 13.405, "live_period": 120}
        venue = chats.ok("sendVenue", chat_id=USER, latitude=1, longitude=2, title="T", address="A")
        assert venue["venue"]["title"] == "T" and venue["location"]["latitude"] == 1

    @pytest.mark.parametrize(
        ("params", "description"),
        [
            ({"longitude": 1}, "Bad Request: latitude is empty"),
            ({"latitude": 1}, "Bad Request: longitude is empty"),
            ({"latitude": 91, "longitude": 1}, "Bad Request: invalid location specified"),
            ({"latitude": 1, "longitude": -181}, "Bad Request: invalid location specified"),
            (
                {"latitude": 1, "longitude": 1, "live_period": 30},
                "Bad Request: wrong live location period specified",
            ),
        ],
    )
    def test_location_validation(
        self, chats: BotHandle, params: dict[str, Any], description: str
    ) -> None:
        assert chats.error("sendLocation", chat_id=USER, **params)[:2] == (400, description)

    def test_contact(self, chats: BotHandle) -> None:
        contact = chats.ok("sendContact", chat_id=USER, phone_number="+1 555", first_name="Max")
        assert contact["contact"] == {"phone_number": "+1 555", "first_name": "Max"}
        assert chats.error("sendContact", chat_id=USER, first_name="Max")[1] == (
            'Bad Request: parameter "phone_number" is required'
        )

    @pytest.mark.parametrize(("emoji", "highest"), [(None, 6), ("🎯", 6), ("⚽", 5), ("🎰", 64)])
    def test_dice(self, chats: BotHandle, emoji: str | None, highest: int) -> None:
        params = {} if emoji is None else {"emoji": emoji}
        for _ in range(3):
            dice = chats.ok("sendDice", chat_id=GROUP, **params)["dice"]
            assert dice["emoji"] == (emoji or "🎲") and 1 <= dice["value"] <= highest
        assert chats.error("sendDice", chat_id=GROUP, emoji="🍕")[:2] == (
            400,
            "Bad Request: DICE_EMOJI_INVALID",
        )

    def test_rate_limited_like_the_other_sends(self, chats: BotHandle) -> None:
        chats.ok("sendLocation", chat_id=USER, latitude=1, longitude=2)
        for method, params in (
            ("sendDice", {}),
            ("sendContact", {"phone_number": "1", "first_name": "A"}),
            ("sendPoll", {"question": "q", "options": ["a", "b"]}),
        ):
            status, _, envelope = chats.error(method, chat_id=USER, **params)
            assert status == 429 and envelope["parameters"]["retry_after"] >= 1, method
        assert [r["method"] for r in chats.sent()] == ["sendLocation"]


class TestPolls:
    def test_regular_and_quiz(self, chats: BotHandle) -> None:
        poll = chats.ok("sendPoll", chat_id=GROUP, question="Lunch?", options=["A", "B"])["poll"]
        assert poll["options"] == [
            {"persistent_id": "0", "text": "A", "voter_count": 0},
            {"persistent_id": "1", "text": "B", "voter_count": 0},
        ]
        assert (poll["type"], poll["is_anonymous"], poll["allows_revoting"]) == (
            "regular",
            True,
            True,
        )
        quiz = chats.ok(
            "sendPoll",
            chat_id=GROUP,
            question="2+2?",
            options=json.dumps(["3", "4"]),
            type="quiz",
            correct_option_id=1,
            is_anonymous=False,
        )["poll"]
        assert (quiz["correct_option_id"], quiz["is_anonymous"], quiz["allows_revoting"]) == (
            1,
            False,
            False,
        )

    @pytest.mark.parametrize(
        ("params", "description"),
        [
            ({"options": ["a", "b"]}, "Bad Request: poll question must be non-empty"),
            ({"question": "q", "options": "[x"}, "Bad Request: can't parse options JSON object"),
            (
                {"question": "q", "options": {"a": 1}},
                "Bad Request: expected an Array of String as options",
            ),
            (
                {"question": "q", "options": [1, 2]},
                "Bad Request: expected an option to be of type String",
            ),
            (
                {"question": "q", "options": []},
                "Bad Request: poll must have at least one answer option",
            ),
            ({"question": "q", "options": ["a"]}, "Bad Request: POLL_ANSWERS_INVALID"),
            (
                {"question": "q", "options": [str(n) for n in range(13)]},
                "Bad Request: poll can't have more than 12 options",
            ),
            (
                {"question": "q", "options": ["a", "b"], "type": "vote"},
                "Bad Request: unsupported poll type specified",
            ),
            (
                {"question": "q", "options": ["a", "b"], "type": "quiz"},
                "Bad Request: correct quiz option list must be non-empty",
            ),
            (
                {"question": "q", "options": ["a", "b"], "type": "quiz", "correct_option_id": 2},
                "Bad Request: wrong quiz correct_option_id",
            ),
        ],
    )
    def test_validation(self, chats: BotHandle, params: dict[str, Any], description: str) -> None:
        assert chats.error("sendPoll", chat_id=GROUP, **params)[:2] == (400, description)


@pytest.mark.usefixtures("unlimited")
class TestEdits:
    def test_caption(self, chats: BotHandle) -> None:
        photo = chats.ok("sendPhoto", chat_id=USER, photo=URL + "p.jpg", caption="old")
        edited = chats.ok(
            "editMessageCaption",
            chat_id=USER,
            message_id=photo["message_id"],
            caption="*new*",
            parse_mode="MarkdownV2",
        )
        assert edited["caption"] == "new" and "edit_date" in edited
        assert edited["photo"] == photo["photo"]
        again = chats.error(
            "editMessageCaption",
            chat_id=USER,
            message_id=photo["message_id"],
            caption="*new*",
            parse_mode="MarkdownV2",
        )
        assert again[1].startswith("Bad Request: message is not modified")
        text = chats.ok("sendMessage", chat_id=USER, text="t")
        assert (
            chats.error(
                "editMessageCaption", chat_id=USER, message_id=text["message_id"], caption="c"
            )[1]
            == "Bad Request: there is no caption in the message to edit"
        )

    def test_media(self, chats: BotHandle) -> None:
        photo = chats.ok("sendPhoto", chat_id=USER, photo=URL + "p.jpg", caption="c")
        media = {"type": "document", "media": URL + "d.pdf", "caption": "doc"}
        edited = chats.ok(
            "editMessageMedia", chat_id=USER, message_id=photo["message_id"], media=media
        )
        assert "photo" not in edited and edited["document"]["file_name"] == "d.pdf"
        assert edited["caption"] == "doc"
        text = chats.ok("sendMessage", chat_id=USER, text="t")
        assert (
            chats.error(
                "editMessageMedia", chat_id=USER, message_id=text["message_id"], media=media
            )[1]
            == "Bad Request: there is no media in the message to edit"
        )
        assert chats.error("editMessageMedia", chat_id=USER, message_id=photo["message_id"])[1] == (
            'Bad Request: parameter "media" is required'
        )

    def test_reply_markup(self, chats: BotHandle) -> None:
        sent = chats.ok("sendMessage", chat_id=USER, text="t")
        markup = {"inline_keyboard": [[{"text": "OK", "callback_data": "ok"}]]}
        edited = chats.ok(
            "editMessageReplyMarkup",
            chat_id=USER,
            message_id=sent["message_id"],
            reply_markup=markup,
        )
        assert edited["reply_markup"] == markup and edited["text"] == "t"
        assert chats.error(
            "editMessageReplyMarkup",
            chat_id=USER,
            message_id=sent["message_id"],
            reply_markup=markup,
        )[1].startswith("Bad Request: message is not modified")
        removed = chats.ok("editMessageReplyMarkup", chat_id=USER, message_id=sent["message_id"])
        assert "reply_markup" not in removed
        assert chats.error("editMessageReplyMarkup", chat_id=USER, message_id=99)[1] == (
            "Bad Request: message to edit not found"
        )


@pytest.mark.usefixtures("unlimited")
class TestDeletesPinsReactions:
    def test_delete_messages_skips_missing_ones(self, chats: BotHandle) -> None:
        ids = [chats.ok("sendMessage", chat_id=USER, text=str(n))["message_id"] for n in range(3)]
        assert chats.ok("deleteMessages", chat_id=USER, message_ids=[ids[0], ids[2], 77]) is True
        assert chats.error("deleteMessage", chat_id=USER, message_id=ids[0])[1] == (
            "Bad Request: message to delete not found"
        )
        assert chats.ok("deleteMessage", chat_id=USER, message_id=ids[1]) is True
        for params, description in [
            ({}, "Bad Request: message identifiers are not specified"),
            ({"message_ids": "[1,"}, "Bad Request: can't parse message_ids JSON object"),
            ({"message_ids": {"a": 1}}, "Bad Request: expected an Array of message identifiers"),
            (
                {"message_ids": list(range(1, 102))},
                "Bad Request: too many message identifiers specified",
            ),
        ]:
            assert chats.error("deleteMessages", chat_id=USER, **params)[1] == description

    def test_pin_and_unpin(self, chats: BotHandle) -> None:
        sent = chats.ok("sendMessage", chat_id=GROUP, text="pin")
        assert chats.ok("pinChatMessage", chat_id=GROUP, message_id=sent["message_id"]) is True
        assert chats.ok("unpinChatMessage", chat_id=GROUP) is True
        assert chats.error("pinChatMessage", chat_id=GROUP, message_id=50)[1] == (
            "Bad Request: message to pin not found"
        )
        assert [r["method"] for r in chats.sent()] == [
            "sendMessage",
            "pinChatMessage",
            "unpinChatMessage",
        ]

    def test_reactions(self, chats: BotHandle) -> None:
        chats.inject([private_message(USER, "hi", message_id=5)])
        reaction = [{"type": "emoji", "emoji": "👍"}]
        assert chats.ok("setMessageReaction", chat_id=USER, message_id=5, reaction=reaction)
        for reaction, description in [
            ({"type": "emoji"}, "Bad Request: expected an Array of ReactionType"),
            (["👍"], "Bad Request: can't parse ReactionType: expected an Object"),
            ([{"type": "emoji", "emoji": ""}], "Bad Request: REACTION_INVALID"),
            ([{"type": "emoji", "emoji": "👍"}] * 2, "Bad Request: REACTIONS_TOO_MANY"),
        ]:
            assert (
                chats.error("setMessageReaction", chat_id=USER, message_id=5, reaction=reaction)[1]
                == description
            )
        assert chats.error("setMessageReaction", chat_id=USER, message_id=6)[1] == (
            "Bad Request: message to react not found"
        )


class TestQueriesAndMembers:
    def test_inline_query_is_answered_once(self, chats: BotHandle) -> None:
        user = {"id": USER, "is_bot": False, "first_name": "Ann"}
        chats.inject([{"inline_query": {"id": "77", "from": user, "query": "q", "offset": ""}}])
        results = [
            {
                "type": "article",
                "id": "a",
                "title": "A",
                "input_message_content": {"message_text": "a"},
            }
        ]
        assert chats.ok("answerInlineQuery", inline_query_id="77", results=results) is True
        assert chats.error("answerInlineQuery", inline_query_id="77", results=results)[1] == (
            "Bad Request: query is too old and response timeout expired or query ID is invalid"
        )
        chats.inject([{"inline_query": {"id": "78", "from": user, "query": "q", "offset": ""}}])
        for bad, description in [
            ("{", "Bad Request: can't parse inline query results JSON object"),
            ({"a": 1}, "Bad Request: expected an Array of inline query results"),
            ([results[0]] * 51, "Bad Request: too many inline query results specified"),
            ([results[0], results[0]], "Bad Request: RESULT_ID_DUPLICATE"),
        ]:
            assert chats.error("answerInlineQuery", inline_query_id="78", results=bad)[1] == (
                description
            )

    def test_chat_members(self, chats: BotHandle) -> None:
        group_message = private_message(555, "hello", message_id=3)
        group_message["message"]["chat"] = {"id": GROUP, "type": "supergroup", "title": "Team"}
        chats.inject([group_message])
        member = chats.ok("getChatMember", chat_id=GROUP, user_id=555)
        assert member == {
            "user": {"id": 555, "is_bot": False, "first_name": "Tester"},
            "status": "member",
        }
        assert chats.ok("getChatMember", chat_id=USER, user_id=USER)["user"]["first_name"] == "Ann"
        assert chats.ok("getChatMember", chat_id=GROUP, user_id=chats.id)["status"] == "member"
        assert chats.error("getChatMember", chat_id=GROUP, user_id=556)[1] == (
            "Bad Request: user not found"
        )
        assert chats.error("getChatMember", chat_id=GROUP, user_id="x")[1] == (
            "Bad Request: invalid user_id specified"
        )
