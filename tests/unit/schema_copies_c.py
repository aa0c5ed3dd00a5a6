"""Readers of the envelope schema's hand-written copies in C, for tests/unit/test_schema_copies.py.

The schema is the proto descriptor (``sluice.v1.envelope_pb2``; tests/unit/cli/test_protogen.py keeps
it in step with the .proto). Four modules restate parts of it by hand: ``ingress/_scan.c`` and
``streams/_decode.c`` as field numbers and wire types, ``ingress/validate.py`` and
``streams/decode.py`` as field and oneof names. Each reader takes a copy's source text and
returns the problems found (the Python copies: tests/unit/schema_copies_py.py), each naming the copy, the message and the field: ``[]`` when the
copy agrees with the descriptor. A copy the reader cannot make sense of is a problem too, so a
reworded copy fails the test until its reader is updated, instead of passing unread.
"""

from __future__ import annotations

import re

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from sluice.v1 import envelope_pb2

ENVELOPE = envelope_pb2.Envelope.DESCRIPTOR
BATCH = envelope_pb2.EnvelopeBatch.DESCRIPTOR
WIRES = {"VARINT": 0, "FIXED64": 1, "LEN": 2, "FIXED32": 5}
_VARINT_TYPES = {"TYPE_INT32", "TYPE_INT64", "TYPE_UINT32", "TYPE_UINT64", "TYPE_SINT32", "TYPE_SINT64",
                 "TYPE_BOOL", "TYPE_ENUM"}
_TYPE_NAMES = {v: k for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}


def wire_of(field: FieldDescriptor) -> int:
    """The wire type protobuf writes ``field`` with (packed repeated scalars aside: none here)."""
    name = _TYPE_NAMES[field.type]
    if name in _VARINT_TYPES:
        return WIRES["VARINT"]
    if name in ("TYPE_DOUBLE", "TYPE_FIXED64", "TYPE_SFIXED64"):
        return WIRES["FIXED64"]
    if name in ("TYPE_FLOAT", "TYPE_FIXED32", "TYPE_SFIXED32"):
        return WIRES["FIXED32"]
    return WIRES["LEN"]


def reachable(root: Descriptor = ENVELOPE) -> list[Descriptor]:
    """``root`` and every message type its fields lead to, map entries included."""
    found: list[Descriptor] = []
    todo = [root]
    while todo:
        message = todo.pop(0)
        if message not in found:
            found.append(message)
            todo += [f.message_type for f in message.fields if f.message_type is not None]
    return found


def compare(copy: str, message: Descriptor, wires: dict[int, int], *, complete: bool) -> list[str]:
    """How the field numbers and wire types ``copy`` gives ``message`` differ from the descriptor's;
    with ``complete``, fields it leaves out differ too."""
    problems = []
    for number, wire in sorted(wires.items()):
        field = message.fields_by_number.get(number)
        if field is None:
            problems.append(f"{copy}: {message.full_name} has no field {number}")
        elif wire_of(field) != wire:
            problems.append(
                f"{copy}: {message.full_name}.{field.name} ({number}) has wire type {wire_of(field)}, not {wire}"
            )
    if complete:
        problems += [f"{copy}: {message.full_name}.{f.name} ({f.number}) is missing"
                     for f in message.fields if f.number not in wires]
    return problems


def _bits(expression: str) -> set[int]:
    return {int(n) for n in re.findall(r"BIT\((\d+)\)", expression)}


def _functions(source: str) -> dict[str, str]:
    """The bodies of a C file's top-level functions, by name."""
    return {m["name"]: m["body"] for m in re.finditer(
        r"^static [^\n;=]*?\b(?P<name>\w+)\([^;{]*\)\s*\{(?P<body>.*?)^\}", source, re.M | re.S)}


def c_field_reads(body: str) -> dict[int, int]:
    """The (field number, wire type) pairs a C function's tests of ``f.number`` and ``f.wire`` accept."""
    found: dict[int, int] = {}
    for n, wire in re.findall(r"f\.number == (\d+) && f\.wire == (\w+)", body):
        found[int(n)] = WIRES[wire]
    for n, wire in re.findall(r"f\.number != (\d+) \|\| f\.wire != (\w+)", body):
        found[int(n)] = WIRES[wire]
    for low, high, wire in re.findall(r"f\.number >= (\d+) && f\.number <= (\d+) && f\.wire == (\w+)", body):
        found.update(dict.fromkeys(range(int(low), int(high) + 1), WIRES[wire]))
    for wire, a, b in re.findall(r"f\.wire != (\w+) \|\| \(f\.number != (\d+) && f\.number != (\d+)\)", body):
        found.update({int(a): WIRES[wire], int(b): WIRES[wire]})
    return found


def _function_reads(copy: str, source: str, readers: dict[str, Descriptor]) -> list[str]:
    functions = _functions(source)
    problems = []
    for name, message in readers.items():
        reads = c_field_reads(functions.get(name, ""))
        if not reads:
            problems.append(f"{copy}: cannot read the fields {name}() accepts")
        problems += compare(f"{copy} {name}()", message, reads, complete=False)
    return problems


def scan_c(source: str, copy: str = "ingress/_scan.c") -> list[str]:
    """``_scan.c``: its ``schema_t`` tables (each field's rule, hence its wire type by ``WIRE_OF``,
    which fields repeat, the oneof), the batch loop of ``scan()`` and ``source_ids()``."""
    problems = _function_reads(copy, source, {"scan": BATCH, "source_ids": ENVELOPE})
    source_id = ENVELOPE.fields_by_name["source_id"]
    if c_field_reads(_functions(source).get("source_ids", "")) != {source_id.number: wire_of(source_id)}:
        problems.append(f"{copy} source_ids(): does not read source_id ({source_id.number}) alone")
    table = re.search(r"WIRE_OF\[\] = \{(.*?)\};", source, re.S)
    wire_of_rule = {rule: WIRES[wire] for rule, wire in re.findall(r"\[(\w+)\] = (\w+)", table[1] if table else "")}
    schemas = {}
    for m in re.finditer(r"static const schema_t (\w+) = \{(.*?)\};", source, re.S):
        fields = {int(n): (rule, sub) for n, rule, sub in re.findall(r"\[(\d+)\] = \{(\w+)(?:, &(\w+))?\}", m[2])}
        flags = {k: _bits(v) for k, v in re.findall(r"\.(repeated|oneof) = ([^,}]+)", m[2])}
        schemas[m[1]] = fields, flags
    if not wire_of_rule or "ENVELOPE" not in schemas:
        return [*problems, f"{copy}: cannot find WIRE_OF or the ENVELOPE schema"]
    todo: list[tuple[str, Descriptor]] = [("ENVELOPE", ENVELOPE)]
    checked: dict[str, Descriptor] = {}
    while todo:
        name, message = todo.pop(0)
        if checked.setdefault(name, message) is not message:
            problems.append(f"{copy}: schema {name} stands for {checked[name].full_name} and {message.full_name}")
            continue
        fields, flags = schemas[name]
        where = f"{copy} {name}"
        unknown = [rule for rule, _ in fields.values() if rule not in wire_of_rule]
        problems += [f"{where}: rule {rule} has no wire type in WIRE_OF" for rule in unknown]
        problems += compare(where, message, {n: wire_of_rule.get(rule, -1) for n, (rule, _) in fields.items()},
                            complete=True)
        repeated = {f.number for f in message.fields if f.is_repeated}
        if flags.get("repeated", set()) != repeated:
            problems.append(f"{where}: repeats fields {sorted(flags.get('repeated', set()))}, the proto {sorted(repeated)}")
        members = {f.number for o in message.oneofs for f in o.fields}
        if flags.get("oneof", set()) != members:
            problems.append(f"{where}: oneof of fields {sorted(flags.get('oneof', set()))}, the proto {sorted(members)}")
        for number, (_, sub) in fields.items():
            field = message.fields_by_number.get(number)
            if sub and field is not None and field.message_type is not None:
                todo.append((sub, field.message_type))
    problems += [f"{copy}: {m.full_name} has no schema" for m in reachable() if m not in checked.values()]
    return problems


_GAUGE = envelope_pb2.Gauge.DESCRIPTOR
# What each of _decode.c's tables and functions reads.
DECODE_TABLES = {
    "LOG_WIRES": envelope_pb2.Log.DESCRIPTOR, "COUNTER_WIRES": envelope_pb2.Counter.DESCRIPTOR,
    "TIMER_WIRES": envelope_pb2.Timer.DESCRIPTOR, "EVENT_WIRES": envelope_pb2.Event.DESCRIPTOR,
    "ENTRY_WIRES": _GAUGE.fields_by_name["metrics"].message_type,
    "READING_WIRES": envelope_pb2.GaugeValue.DESCRIPTOR,
}
DECODE_FUNCTIONS = {
    "decode": BATCH, "read_envelope": ENVELOPE, "read_tag": ENVELOPE.fields_by_name["tags"].message_type,
    "add_gauge": _GAUGE,
}
_UNUSED = 99  # a table's mark for a field number its message does not have


def decode_c(source: str, copy: str = "streams/_decode.c") -> list[str]:
    """``_decode.c``: its ``*_WIRES`` tables, the fields its functions accept, the oneof member
    each ``case`` of ``add_envelope()`` names and the table it reads that member with, and the
    number it takes for ``Log.Type.ERR``."""
    problems = _function_reads(copy, source, DECODE_FUNCTIONS)
    tables = dict(re.findall(r"static const uint32_t (\w+_WIRES)\[\d+\] = \{([^}]*)\}", source))
    for name in sorted(set(tables) | set(DECODE_TABLES)):
        if name not in tables or name not in DECODE_TABLES:
            problems.append(f"{copy}: table {name} is {'gone' if name not in tables else 'not known to this test'}")
            continue
        values = [v.strip() for v in tables[name].split(",")]
        wires = {n: WIRES[v] for n, v in enumerate(values) if n and v != str(_UNUSED)}
        problems += compare(f"{copy} {name}", DECODE_TABLES[name], wires, complete=False)
    body = _functions(source).get("add_envelope", "")
    cases = re.findall(r"case (\d+): (?:\{ )?/\* (\w+) \*/(.*?)(?=\n    case |\n    \})", body, re.S)
    if not cases:
        problems.append(f"{copy}: cannot read the cases of add_envelope()")
    for number, name, code in cases:
        field = ENVELOPE.fields_by_number.get(int(number))
        if field is None or field.name != name:
            problems.append(f"{copy} add_envelope(): case {number} is {name}, the proto's field {number} is "
                            f"{field.name if field else 'missing'}")
            continue
        for table in re.findall(r"\b(\w+_WIRES)\b", code):
            if DECODE_TABLES.get(table) is not field.message_type:
                problems.append(f"{copy} add_envelope(): case {number} ({name}) reads it with {table}")
    for number, member in re.findall(r"f\.number == (\d+) && f\.wire == \w+\) \{\s*ONCE\(e->seen, \d+\);\s*e->(\w+)",
                                     _functions(source).get("read_envelope", "")):
        field = ENVELOPE.fields_by_number.get(int(number))
        if field is None or not field.name.startswith(member):
            problems.append(f"{copy} read_envelope(): field {number} is read as {member}")
    err = re.search(r"\(int32_t\)m\[(\d+)\]\.value == (\d+) \? ERR : OUT", source)
    log = envelope_pb2.Log.DESCRIPTOR
    if err is None:
        problems.append(f"{copy}: cannot find how a log's type is read")
    elif (int(err[1]), int(err[2])) != (log.fields_by_name["type"].number, envelope_pb2.Log.ERR):
        problems.append(f"{copy}: reads ERR as field {err[1]} == {err[2]}, the proto has field "
                        f"{log.fields_by_name['type'].number} == {envelope_pb2.Log.ERR}")
    return problems

