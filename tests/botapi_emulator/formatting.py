"""Text formatting: HTML / Markdown / MarkdownV2 into entities, auto-detected entities
(commands, mentions, URLs)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botapi_emulator.encoding import utf16_len


class EntityParseError(Exception):
    """Becomes 400 "Bad Request: can't parse entities: <message>"."""


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


class _EntityBuilder:
    """Collects plain text and entities (offsets in UTF-16 code units)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length16 = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, chunk: str) -> None:
        if chunk:
            self.parts.append(chunk)
            self.length16 += utf16_len(chunk)

    def entity(self, kind: str, start16: int, **extra: Any) -> None:
        length = self.length16 - start16
        if length > 0:
            self.entities.append({"offset": start16, "length": length, "type": kind, **extra})

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        entities = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), entities


HTML_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
HTML_ENTITY_RE = re.compile(r"&(#[xX][0-9a-fA-F]{1,6}|#[0-9]{1,7}|lt|gt|amp|quot);")
HTML_ATTR_RE = re.compile(
    r"([A-Za-z_:][-A-Za-z0-9_:.]*)\s*(?:=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?"
)


@dataclass
class _OpenTag:
    name: str
    start16: int
    attrs: dict[str, str]
    language: str = ""


def _decode_html_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name.startswith(("#x", "#X")):
        return chr(min(int(name[2:], 16), 0x10FFFF))
    if name.startswith("#"):
        return chr(min(int(name[1:]), 0x10FFFF))
    return {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[name]


def _parse_html_tag(inner: str) -> tuple[str, dict[str, str]]:
    name_match = re.match(r"\s*([A-Za-z][-A-Za-z0-9]*)", inner)
    name = name_match.group(1).lower() if name_match else inner.strip().lower()
    attrs: dict[str, str] = {}
    rest = inner[name_match.end() :] if name_match else ""
    for attr in HTML_ATTR_RE.finditer(rest):
        value = attr.group(2) or ""
        if value[:1] in "\"'":
            value = value[1:-1]
        attrs[attr.group(1).lower()] = html.unescape(value)
    return name, attrs


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: supported tags only, &lt; &gt; &amp; &quot; &#N;."""
    out = _EntityBuilder()
    stack: list[_OpenTag] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] not in "<&":
            j += 1
        out.add(text[i:j])
        i = j
        if i >= n:
            break
        if text[i] == "&":
            match = HTML_ENTITY_RE.match(text, i)
            out.add(_decode_html_entity(match) if match else "&")
            i = match.end() if match else i + 1
            continue
        end = text.find(">", i)
        if end < 0:
            raise EntityParseError(f"Unclosed start tag at byte offset {_byte_offset(text, i)}")
        inner = text[i + 1 : end]
        if inner.startswith("/"):
            _close_html_tag(text, i, inner[1:].strip().lower(), stack, out)
        else:
            _open_html_tag(text, i, inner, stack, out)
        i = end + 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    return out.result()


def _open_html_tag(
    text: str, index: int, inner: str, stack: list[_OpenTag], out: _EntityBuilder
) -> None:
    name, attrs = _parse_html_tag(inner.rstrip("/"))
    if name not in HTML_TAG_TYPES or (name == "span" and attrs.get("class") != "tg-spoiler"):
        raise EntityParseError(
            f'Unsupported start tag "{name}" at byte offset {_byte_offset(text, index)}'
        )
    if name == "code" and stack and stack[-1].name == "pre":
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1].language = language[len("language-") :]
    stack.append(_OpenTag(name, out.length16, attrs))


def _close_html_tag(
    text: str, index: int, name: str, stack: list[_OpenTag], out: _EntityBuilder
) -> None:
    if not stack:
        raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, index)}")
    top = stack.pop()
    if name and name != top.name:
        raise EntityParseError(
            f"Unmatched end tag at byte offset {_byte_offset(text, index)}, "
            f'expected "</{top.name}>", found "</{name}>"'
        )
    kind = HTML_TAG_TYPES[top.name]
    if top.name == "a":
        href = top.attrs.get("href", "")
        if href.startswith("tg://user?id=") and href[13:].isdigit():
            out.entity("text_mention", top.start16, user={"id": int(href[13:])})
        elif href:
            out.entity("text_link", top.start16, url=href)
    elif top.name == "pre":
        extra = {"language": top.language} if top.language else {}
        out.entity("pre", top.start16, **extra)
    elif top.name == "code" and stack and stack[-1].name == "pre":
        return
    elif top.name == "tg-emoji":
        out.entity("custom_emoji", top.start16, custom_emoji_id=top.attrs.get("emoji-id", ""))
    elif top.name == "blockquote" and "expandable" in top.attrs:
        out.entity("expandable_blockquote", top.start16)
    else:
        out.entity(kind, top.start16)


MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
MDV2_MARKERS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough"}
MDV2_MARKERS["||"] = "spoiler"
MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
}


def _add_code(out: _EntityBuilder, content: str, block: bool, start: int) -> None:
    """Append inline code, or a pre block whose first line may name its language."""
    if not block:
        out.add(content)
        out.entity("code", start)
        return
    language, newline, rest = content.partition("\n")
    if newline and language and " " not in language:
        content = rest
    else:
        language = ""
    out.add(content)
    out.entity("pre", start, **({"language": language} if language else {}))


def _mdv2_code(text: str, i: int, out: _EntityBuilder) -> int:
    """Inline code or pre block starting at ``i``; return the index after it."""
    fence = "```" if text.startswith("```", i) else "`"
    j = i + len(fence)
    body: list[str] = []
    while j < len(text):
        if text[j] == "\\" and j + 1 < len(text):
            body.append(text[j + 1])
            j += 2
            continue
        if text.startswith(fence, j):
            break
        body.append(text[j])
        j += 1
    else:
        kind = "Pre" if fence == "```" else "Code"
        raise EntityParseError(
            f"Can't find end of {kind} entity at byte offset {_byte_offset(text, i)}"
        )
    _add_code(out, "".join(body), fence == "```", out.length16)
    return j + len(fence)


def _mdv2_link_end(text: str, i: int) -> tuple[str, int] | None:
    """After ``]`` at ``i``: ``(url)`` -> (url, index after), else None."""
    if not text.startswith("(", i + 1):
        return None
    j = i + 2
    url: list[str] = []
    while j < len(text) and text[j] != ")":
        if text[j] == "\\" and j + 1 < len(text):
            j += 1
        url.append(text[j])
        j += 1
    if j >= len(text):
        return None
    return "".join(url), j + 1


def parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    """MarkdownV2: reserved characters must be escaped; nested entities allowed."""
    out = _EntityBuilder()
    stack: list[tuple[str, int, int]] = []  # (marker, start16, index)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            out.add(text[i + 1])
            i += 2
        elif c == "`":
            i = _mdv2_code(text, i, out)
        elif (c == "|" and text.startswith("||", i)) or c in "*_~":
            marker = "__" if text.startswith("__", i) else ("||" if c == "|" else c)
            _mdv2_toggle(marker, i, stack, out)
            i += len(marker)
        elif c == "[":
            stack.append(("[", out.length16, i))
            i += 1
        elif c == "]" and stack and stack[-1][0] == "[":
            link = _mdv2_link_end(text, i)
            if link is None:
                raise EntityParseError(
                    f"Can't find end of a URL at byte offset {_byte_offset(text, i)}"
                )
            _, start16, _ = stack.pop()
            out.entity("text_link", start16, url=link[0])
            i = link[1]
        elif c == ">" and (i == 0 or text[i - 1] == "\n"):
            i = _mdv2_quote_line(text, i, out)
        elif c in MDV2_RESERVED:
            raise EntityParseError(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        else:
            out.add(c)
            i += 1
    if stack:
        marker, _, index = stack[-1]
        name = "TextUrl" if marker == "[" else MDV2_NAMES[MDV2_MARKERS[marker]]
        raise EntityParseError(
            f"Can't find end of {name} entity at byte offset {_byte_offset(text, index)}"
        )
    return out.result()


def _mdv2_toggle(
    marker: str, index: int, stack: list[tuple[str, int, int]], out: _EntityBuilder
) -> None:
    for pos in range(len(stack) - 1, -1, -1):
        if stack[pos][0] == marker:
            _, start16, _ = stack.pop(pos)
            out.entity(MDV2_MARKERS[marker], start16)
            return
    stack.append((marker, out.length16, index))


def _mdv2_quote_line(text: str, i: int, out: _EntityBuilder) -> int:
    """A ``>`` quoted line (consecutive ones merge into one blockquote)."""
    start = out.length16
    while i < len(text) and text[i] == ">":
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line_text, line_entities = parse_markdown_v2(text[i + 1 : end])
        base = out.length16
        out.add(line_text)
        for entity in line_entities:
            out.entities.append({**entity, "offset": entity["offset"] + base})
        i = end
        if text.startswith("\n>", i):
            out.add("\n")
            i += 1
    out.entity("blockquote", start)
    return i


def parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy Markdown: *bold* _italic_ `code` ```pre``` [text](url), no nesting."""
    out = _EntityBuilder()
    i, n = 0, len(text)
    kinds = {"*": "bold", "_": "italic"}
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.add(text[i + 1])
            i += 2
            continue
        if c not in "_*`[":
            out.add(c)
            i += 1
            continue
        fence = "```" if text.startswith("```", i) else c
        close = "](" if c == "[" else fence
        end = text.find(close, i + len(fence))
        if end < 0 or (c == "[" and text.find(")", end) < 0):
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, i)}"
            )
        content = text[i + len(fence) : end]
        start = out.length16
        if c == "[":
            url_end = text.find(")", end)
            out.add(content)
            out.entity("text_link", start, url=text[end + 2 : url_end])
            i = url_end + 1
            continue
        if fence == "```" or c == "`":
            _add_code(out, content, fence == "```", start)
        else:
            out.add(content)
            out.entity(kinds[c], start)
        i = end + len(fence)
    return out.result()


PARSE_MODES: dict[str, Callable[[str], tuple[str, list[dict[str, Any]]]]] = {
    "html": parse_html,
    "markdown": parse_markdown,
    "markdownv2": parse_markdown_v2,
}

AUTO_ENTITY_RE = re.compile(
    r"(?P<bot_command>(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/]))"
    r"|(?P<url>\bhttps?://[^\s<>\"]+[^\s<>\".,;:!?)\]'])"
    r"|(?P<email>\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b)"
    r"|(?P<mention>(?<![\w@])@[A-Za-z][A-Za-z0-9_]{4,31}\b)"
    r"|(?P<hashtag>(?<![\w#])#\w*[^\W\d]\w*)"
)
NO_AUTO_INSIDE = frozenset({"code", "pre", "text_link", "url", "email"})


def auto_entities(text: str, existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities Telegram detects by itself: commands, URLs, e-mails, mentions, hashtags."""
    if not any(ch in text for ch in "/@#:"):
        return existing
    blocked = [
        (e["offset"], e["offset"] + e["length"]) for e in existing if e["type"] in NO_AUTO_INSIDE
    ]
    found: list[dict[str, Any]] = []
    for match in AUTO_ENTITY_RE.finditer(text):
        offset = utf16_len(text[: match.start()])
        length = utf16_len(match.group(0))
        if any(start < offset + length and offset < end for start, end in blocked):
            continue
        found.append({"offset": offset, "length": length, "type": match.lastgroup or "url"})
    if not found:
        return existing
    return sorted(existing + found, key=lambda e: (e["offset"], -e["length"]))
