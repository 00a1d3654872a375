"""A small HCL reader and writer for the subset aws_appmesh_* configurations use.

Read: blocks with labels, attributes, strings (escapes, `${…}` interpolation, heredocs),
numbers, booleans, null, lists, objects and references (`aws_appmesh_mesh.shop.name`,
`var.x`, `local.y`). Function calls, `for` expressions and operators are refused with the
line they are on: a migration tool should say what it cannot read, not guess.
Write: the same subset, so `export-terraform` output parses back with `parse`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class HclError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


# ---- syntax tree ---------------------------------------------------------------------------


@dataclass
class Literal:
    value: Any


@dataclass
class Template:
    parts: list[Any]  # str or an expression


@dataclass
class ListExpr:
    items: list[Any]


@dataclass
class ObjectExpr:
    pairs: list[tuple[str, Any]]


@dataclass
class Traversal:
    parts: list[str | int]
    line: int = 0

    def __str__(self) -> str:
        text = ""
        for part in self.parts:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


@dataclass
class Attribute:
    name: str
    expr: Any
    line: int = 0


@dataclass
class Block:
    type: str
    labels: list[str]
    body: list[Attribute | Block] = field(default_factory=list)
    line: int = 0

    def attributes(self) -> dict[str, Attribute]:
        return {item.name: item for item in self.body if isinstance(item, Attribute)}

    def blocks(self, type_: str | None = None) -> list[Block]:
        return [b for b in self.body if isinstance(b, Block) and type_ in (None, b.type)]


# ---- lexer ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<nl>\n)
  | (?P<heredoc><<-?([A-Za-z_][A-Za-z0-9_]*)\n)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<string>")
  | (?P<punct>[{}\[\]()=,.:*?!<>+/%&|-])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class Token:
    kind: str
    value: Any
    line: int


def _read_string(text: str, pos: int, line: int) -> tuple[list[Any], int, int]:
    """From just after an opening quote: template parts, the position after the close quote."""
    parts: list[Any] = []
    buf: list[str] = []
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
    while True:
        if pos >= len(text) or text[pos] == "\n":
            raise HclError(line, "unterminated string.")
        ch = text[pos]
        if ch == '"':
            break
        if ch == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt in escapes:
                buf.append(escapes[nxt])
                pos += 2
            elif nxt == "u":
                buf.append(chr(int(text[pos + 2 : pos + 6], 16)))
                pos += 6
            else:
                raise HclError(line, f"unknown escape \\{nxt} in a string.")
            continue
        if text.startswith("$${", pos) or text.startswith("%%{", pos):
            buf.append(text[pos + 1 : pos + 3])
            pos += 3
            continue
        if text.startswith("%{", pos):
            raise HclError(line, "template directives (%{ … }) are not supported.")
        if text.startswith("${", pos):
            end = _interpolation_end(text, pos + 2, line)
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(_Parser(_lex(text[pos + 2 : end], line)).expression_only())
            pos = end + 1
            continue
        buf.append(ch)
        pos += 1
    if buf or not parts:
        parts.append("".join(buf))
    return parts, pos + 1, line


def _interpolation_end(text: str, pos: int, line: int) -> int:
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                return pos
            depth -= 1
        elif ch == "\n":
            break
        pos += 1
    raise HclError(line, "unterminated ${ interpolation.")


def _lex(text: str, line: int = 1) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise HclError(line, f"unexpected character {text[pos]!r}.")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "string":
            parts, pos, line = _read_string(text, m.end(), line)
            tokens.append(Token("string", parts, line))
            continue
        if kind == "heredoc":
            marker = re.match(r"<<-?([A-Za-z_][A-Za-z0-9_]*)", value).group(1)
            end = re.compile(rf"^[ \t]*{re.escape(marker)}[ \t]*$", re.M).search(text, m.end())
            if end is None:
                raise HclError(line, f"heredoc <<{marker} is never closed.")
            body = text[m.end() : end.start()]
            if value.startswith("<<-"):
                lines = body.splitlines(keepends=True)
                indent = min((len(x) - len(x.lstrip(" \t")) for x in lines if x.strip()), default=0)
                body = "".join(x[indent:] for x in lines)
            tokens.append(Token("string", [body], line))
            line += text.count("\n", m.start(), end.end())
            pos = end.end()
            continue
        if kind == "nl":
            tokens.append(Token("nl", "\n", line))
            line += 1
        elif kind == "comment":
            line += value.count("\n")
        elif kind == "number":
            tokens.append(
                Token("number", float(value) if re.search(r"[.eE]", value) else int(value), line)
            )
        elif kind in ("ident", "punct"):
            tokens.append(Token(kind, value, line))
        pos = m.end()
    tokens.append(Token("eof", None, line))
    return tokens


# ---- parser --------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, skip_nl: bool = False) -> Token:
        if skip_nl:
            while self.tokens[self.pos].kind == "nl":
                self.pos += 1
        return self.tokens[self.pos]

    def take(self, skip_nl: bool = False) -> Token:
        token = self.peek(skip_nl)
        self.pos += 1
        return token

    def expect(self, value: str, skip_nl: bool = False) -> Token:
        token = self.take(skip_nl)
        if token.value != value or token.kind not in ("punct",):
            raise HclError(token.line, f"expected '{value}', found {_show(token)}.")
        return token

    def body(self, closing: str | None) -> list[Attribute | Block]:
        items: list[Attribute | Block] = []
        while True:
            token = self.peek(skip_nl=True)
            if closing is None and token.kind == "eof":
                return items
            if closing is not None and token.kind == "punct" and token.value == closing:
                self.take()
                return items
            if token.kind != "ident":
                raise HclError(token.line, f"expected an attribute or block, found {_show(token)}.")
            self.take()
            nxt = self.peek()
            if nxt.kind == "punct" and nxt.value == "=":
                self.take()
                expr = self.expression()
                end = self.peek()
                if end.kind == "nl":
                    self.take()
                elif not (end.kind == "eof" or (end.kind == "punct" and end.value == "}")):
                    raise HclError(end.line, f"expected a new line, found {_show(end)}.")
                items.append(Attribute(token.value, expr, token.line))
                continue
            labels = []
            while self.peek().kind in ("string", "ident"):
                label = self.take()
                if label.kind == "string":
                    if len(label.value) != 1 or not isinstance(label.value[0], str):
                        raise HclError(label.line, "a block label cannot hold interpolation.")
                    labels.append(label.value[0])
                else:
                    labels.append(label.value)
            self.expect("{")
            items.append(Block(token.value, labels, self.body("}"), token.line))

    def expression_only(self) -> Any:
        expr = self.expression()
        token = self.peek(skip_nl=True)
        if token.kind != "eof":
            raise HclError(token.line, f"unexpected {_show(token)} in an interpolation.")
        return expr

    def expression(self) -> Any:
        token = self.take(skip_nl=True)
        if token.kind == "number":
            expr: Any = Literal(token.value)
        elif token.kind == "string":
            parts = token.value
            expr = (
                Literal(parts[0])
                if len(parts) == 1 and isinstance(parts[0], str)
                else Template(parts)
            )
        elif token.kind == "punct" and token.value == "-" and self.peek().kind == "number":
            expr = Literal(-self.take().value)
        elif token.kind == "punct" and token.value == "[":
            items = []
            while not self._closing("]"):
                items.append(self.expression())
                if self._closing("]"):
                    break
                self.expect(",", skip_nl=True)
            expr = ListExpr(items)
        elif token.kind == "punct" and token.value == "{":
            pairs = []
            while not self._closing("}"):
                key_token = self.take(skip_nl=True)
                if key_token.kind == "ident":
                    key = key_token.value
                elif key_token.kind == "string" and len(key_token.value) == 1:
                    key = key_token.value[0]
                else:
                    raise HclError(
                        key_token.line, f"expected an object key, found {_show(key_token)}."
                    )
                sep = self.take(skip_nl=True)
                if sep.value not in ("=", ":"):
                    raise HclError(sep.line, f"expected '=' after '{key}', found {_show(sep)}.")
                pairs.append((key, self.expression()))
                if self.peek().kind == "punct" and self.peek().value == ",":
                    self.take()
            expr = ObjectExpr(pairs)
        elif token.kind == "ident":
            if token.value in ("true", "false"):
                expr = Literal(token.value == "true")
            elif token.value == "null":
                expr = Literal(None)
            elif self.peek().kind == "punct" and self.peek().value == "(":
                raise HclError(token.line, f"function calls ({token.value}(…)) are not supported.")
            else:
                parts: list[str | int] = [token.value]
                while self.peek().kind == "punct" and self.peek().value in (".", "["):
                    if self.take().value == ".":
                        name = self.take()
                        if name.kind == "number":
                            parts.append(int(name.value))
                        elif name.kind == "ident":
                            parts.append(name.value)
                        else:
                            raise HclError(name.line, f"unexpected {_show(name)} after '.'.")
                    else:
                        index = self.take(skip_nl=True)
                        if index.kind == "number":
                            parts.append(int(index.value))
                        elif index.kind == "string" and len(index.value) == 1:
                            parts.append(index.value[0])
                        else:
                            raise HclError(index.line, "only literal indexes are supported.")
                        self.expect("]", skip_nl=True)
                expr = Traversal(parts, token.line)
        else:
            raise HclError(token.line, f"unexpected {_show(token)} in an expression.")
        after = self.peek()
        if after.kind == "punct" and after.value in "?+-*/%<>!&|=" and after.value != "=":
            raise HclError(after.line, f"operators ('{after.value}') are not supported.")
        return expr

    def _closing(self, value: str) -> bool:
        token = self.peek(skip_nl=True)
        if token.kind == "punct" and token.value == value:
            self.take()
            return True
        return False


def _show(token: Token) -> str:
    if token.kind == "eof":
        return "the end of the file"
    if token.kind == "nl":
        return "a new line"
    if token.kind == "string":
        return "a string"
    return f"'{token.value}'"


def parse(text: str) -> list[Attribute | Block]:
    """The top-level body of an HCL file."""
    return _Parser(_lex(text)).body(None)


# ---- evaluation ----------------------------------------------------------------------------

Resolver = Callable[[Traversal], Any]


def evaluate(expr: Any, resolve: Resolver) -> Any:
    if isinstance(expr, Literal):
        return expr.value
    if isinstance(expr, Traversal):
        return resolve(expr)
    if isinstance(expr, Template):
        if len(expr.parts) == 1 and not isinstance(expr.parts[0], str):
            return evaluate(expr.parts[0], resolve)  # "${x}" keeps x's type
        out = []
        for part in expr.parts:
            value = part if isinstance(part, str) else evaluate(part, resolve)
            out.append(value if isinstance(value, str) else json.dumps(value))
        return "".join(out)
    if isinstance(expr, ListExpr):
        return [evaluate(item, resolve) for item in expr.items]
    if isinstance(expr, ObjectExpr):
        return {key: evaluate(value, resolve) for key, value in expr.pairs}
    raise TypeError(expr)


def body_value(body: list[Attribute | Block], resolve: Resolver) -> dict[str, Any]:
    """A block body as data: attributes evaluated, nested blocks as lists of bodies (the
    shape Terraform state uses, so one converter reads both)."""
    out: dict[str, Any] = {}
    for item in body:
        if isinstance(item, Attribute):
            out[item.name] = evaluate(item.expr, resolve)
        else:
            if item.type == "dynamic":
                raise HclError(item.line, "dynamic blocks are not supported.")
            out.setdefault(item.type, []).append(body_value(item.body, resolve))
    return out


# ---- writer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A reference written bare (meshplane_mesh.shop.name), not as a string."""

    text: str


def quote(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
        .replace("${", "$${")
        .replace("%{", "%%{")
    )
    return f'"{escaped}"'


def _identifier_ok(key: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) is not None


def render_value(value: Any, indent: int = 0) -> str:
    pad = "  " * indent
    if isinstance(value, Ref):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v, indent) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = ["{"]
        for key, item in value.items():
            name = key if _identifier_ok(key) else quote(key)
            lines.append(f"{pad}  {name} = {render_value(item, indent + 1)}")
        lines.append(pad + "}")
        return "\n".join(lines)
    raise TypeError(f"cannot write {value!r} as HCL")


def render_block(block: Block, indent: int = 0) -> str:
    """A block as `terraform fmt` lays it out: runs of one-line attributes aligned on `=`."""
    pad = "  " * indent
    head = " ".join([block.type, *(quote(label) for label in block.labels)])
    lines = [f"{pad}{head} {{"]
    rendered = [
        (item.name, render_value(item.expr, indent + 1)) if isinstance(item, Attribute) else item
        for item in block.body
    ]
    for i, item in enumerate(rendered):
        if isinstance(item, Block):
            lines.append(render_block(item, indent + 1))
            continue
        name, text = item
        width = len(name)
        if "\n" not in text:
            j = i
            while j > 0 and _one_line(rendered[j - 1]):
                j -= 1
            k = i
            while k + 1 < len(rendered) and _one_line(rendered[k + 1]):
                k += 1
            width = max(len(rendered[m][0]) for m in range(j, k + 1))
        lines.append(f"{pad}  {name.ljust(width)} = {text}")
    lines.append(pad + "}")
    return "\n".join(lines)


def _one_line(item: Any) -> bool:
    return isinstance(item, tuple) and "\n" not in item[1]
