"""Readers of the envelope schema's copies in Python (field and oneof names), for
tests/unit/test_schema_copies.py; see tests/unit/schema_copies_c.py for the C ones."""

from __future__ import annotations

import ast

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from sluice.v1 import envelope_pb2
from tests.unit.schema_copies_c import ENVELOPE

_MESSAGE_API = set(dir(Message)) | {"DESCRIPTOR"}
_ENUM_API = {"DESCRIPTOR", "Name", "Value", "keys", "values", "items"}
# What an expression is, as far as the schema goes: ("module",), ("class", message), ("enum",
# enum), ("msg", message), ("seq", message), ("map", value message or None), ("oneof", message,
# oneof name), ("enumerate", what is enumerated), ("name", "Sequence"); None for anything else.
Kind = tuple[object, ...] | None


class _PythonCopy(ast.NodeVisitor):
    """Follows the message types of a module's names through assignments, loops and annotations,
    and checks every attribute, ``WhichOneof`` and oneof comparison against the descriptor."""

    def __init__(self, copy: str) -> None:
        self.copy = copy
        self.problems: set[str] = set()
        self.used: set[tuple[str, str]] = set()  # (message, field) read
        self.scope: dict[str, Kind] = {}

    def problem(self, node: ast.AST, text: str) -> None:
        self.problems.add(f"{self.copy}:{getattr(node, 'lineno', 0)}: {text}")

    def kind_of(self, node: ast.expr) -> Kind:
        if isinstance(node, ast.Name):
            return self.scope.get(node.id)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, self.kind_of(node.value))
        if isinstance(node, ast.Subscript):
            inner = self.kind_of(node.value)
            if inner and inner[0] in ("seq", "map") and inner[1] is not None:
                return ("msg", inner[1])
            if isinstance(node.slice, ast.Name) and inner == ("name", "Sequence"):
                element = self.scope.get(node.slice.id)
                return ("seq", element[1]) if element and element[0] == "class" else None
            return None
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _attribute(self, node: ast.Attribute, owner: Kind) -> Kind:
        attr = node.attr
        if owner == ("module",):
            message = envelope_pb2.DESCRIPTOR.message_types_by_name.get(attr)
            if message is None and attr != "DESCRIPTOR":
                self.problem(node, f"envelope.proto has no message {attr}")
            return ("class", message) if message else None
        if owner is None:
            return None
        if owner[0] == "class":
            message = owner[1]
            assert isinstance(message, Descriptor)
            if attr in message.enum_types_by_name:
                return ("enum", message.enum_types_by_name[attr])
            if attr not in message.enum_values_by_name and attr not in message.nested_types_by_name \
                    and attr != "DESCRIPTOR":
                self.problem(node, f"{message.full_name} has no enum, value or type {attr}")
            return None
        if owner[0] == "enum":
            enum = owner[1]
            if attr not in enum.values_by_name and attr not in _ENUM_API:  # type: ignore[attr-defined]
                self.problem(node, f"{enum.full_name} has no value {attr}")  # type: ignore[attr-defined]
            return None
        if owner[0] != "msg":
            return None
        message = owner[1]
        assert isinstance(message, Descriptor)
        field = message.fields_by_name.get(attr)
        if field is None:
            if attr not in _MESSAGE_API:
                self.problem(node, f"{message.full_name} has no field {attr}")
            return None
        self.used.add((message.full_name, attr))
        target = field.message_type
        if target is not None and target.GetOptions().map_entry:
            return ("map", target.fields_by_name["value"].message_type)
        if field.is_repeated:
            return ("seq", target)
        return ("msg", target) if target is not None else None

    def _call(self, node: ast.Call) -> Kind:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "enumerate" and node.args:
            return ("enumerate", self.kind_of(node.args[0]))
        if isinstance(func, ast.Attribute) and func.attr == "WhichOneof":
            owner = self.kind_of(func.value)
            name = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            if owner and owner[0] == "msg":
                message = owner[1]
                assert isinstance(message, Descriptor)
                if name not in message.oneofs_by_name:
                    self.problem(node, f"{message.full_name} has no oneof {name}")
                return ("oneof", message, name)
            return None
        made = self.kind_of(func)
        return ("msg", made[1]) if made and made[0] == "class" else None

    def bind(self, target: ast.expr, kind: Kind) -> None:
        if isinstance(target, ast.Name):
            self.scope[target.id] = kind
        elif isinstance(target, ast.Tuple):
            for element in target.elts:
                self.bind(element, None)
            if kind and kind[0] == "enumerate" and len(target.elts) == 2:
                inner = kind[1]
                if isinstance(inner, tuple) and inner[0] == "seq":
                    self.bind(target.elts[1], ("msg", inner[1]))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            name = alias.asname or alias.name
            if node.module == "sluice.v1" and alias.name == "envelope_pb2":
                self.scope[name] = ("module",)
            elif node.module == "sluice.v1.envelope_pb2":
                self.scope[name] = ("class", envelope_pb2.DESCRIPTOR.message_types_by_name[alias.name])
            elif alias.name == "Sequence":
                self.scope[name] = ("name", "Sequence")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        saved = dict(self.scope)
        for arg in node.args.args + node.args.kwonlyargs:
            kind = self.kind_of(arg.annotation) if arg.annotation is not None else None
            self.scope[arg.arg] = ("msg", kind[1]) if kind and kind[0] == "class" else kind
        self.generic_visit(node)
        self.scope = saved

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)
            self.bind(target, self.kind_of(node.value))

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        kind = self.kind_of(node.iter)
        self.bind(node.target, ("msg", kind[1]) if kind and kind[0] == "seq" else kind)
        for statement in node.body + node.orelse:
            self.visit(statement)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.kind_of(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.kind_of(node)
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        kind = self.kind_of(node.left)
        if kind and kind[0] == "oneof":
            message, oneof = kind[1], kind[2]
            assert isinstance(message, Descriptor)
            members = [f.name for f in message.oneofs_by_name[oneof].fields] if oneof in message.oneofs_by_name else []
            for right in node.comparators:
                for name in right.elts if isinstance(right, ast.Tuple) else [right]:
                    if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value not in members:
                        self.problem(name, f"{message.full_name}.{oneof} has no member {name.value}")
        self.generic_visit(node)


def _read(source: str, copy: str) -> tuple[_PythonCopy, ast.Module]:
    tree = ast.parse(source)
    reader = _PythonCopy(copy)
    reader.visit(tree)
    return reader, tree


def _members(oneof: str = "message") -> list[str]:
    return [f.name for f in ENVELOPE.oneofs_by_name[oneof].fields]


def decode_py(source: str, copy: str = "streams/decode.py") -> list[str]:
    """``decode.py``: every field and oneof name it reads exists, and it reads every kind."""
    reader, _ = _read(source, copy)
    missing = [m for m in _members() if (ENVELOPE.full_name, m) not in reader.used]
    return sorted(reader.problems) + ([f"{copy}: does not read {', '.join(missing)}"] if missing else [])


def validate_py(source: str, copy: str = "ingress/validate.py") -> list[str]:
    """``validate.py``: every field and oneof name it reads exists, and its ``KINDS`` are the oneof's."""
    reader, tree = _read(source, copy)
    problems = sorted(reader.problems)
    kinds = next((n.value.value for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                  and any(isinstance(t, ast.Name) and t.id == "KINDS" for t in n.targets)), None)
    if kinds != ", ".join(_members()):
        problems.append(f"{copy}: KINDS is {kinds!r}, the oneof's members are {', '.join(_members())!r}")
    return problems
