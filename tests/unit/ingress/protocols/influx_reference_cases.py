"""The decoder cases of InfluxData's reference line-protocol decoder, with their expected entries.

Transcribed from ``decoderTests`` in ``lineprotocol/decoder_test.go`` of
github.com/influxdata/line-protocol at commit 08518c8fca06f307353bc0a0d7c9f96c2cadff93 (the
error-position markers removed). Each case is (name, text, precision, entries): an entry is the
:class:`Line` the reference decodes, or None where it reports an error for the entry; decoding
resumes after a faulty entry as the reference does. An entry without a timestamp has None,
where the reference takes its default time.

The MIT License (MIT)

Copyright (c) 2021 InfluxData Inc.

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
the Software, and to permit persons to whom the Software is furnished to do so,
subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

from __future__ import annotations

from sluice.ingress.protocols.influx import Line

CASES: list[tuple[str, str, str, list[Line | None]]] = [
    ("all-fields-present-no-escapes",
     "\n   # comment\n somename,tag1=val1,tag2=val2  floatfield=1,strfield=\"hello\",intfield=-1i,uintfield=1u,"
     "boolfield=true  1602841605822791506\n", "ns",
     [Line("somename", {"tag1": "val1", "tag2": "val2"},
           {"floatfield": 1.0, "strfield": "hello", "intfield": -1, "uintfield": 1, "boolfield": True},
           1602841605822791506)]),
    ("multiple-entries",
     "\n   # comment\n m1,tag1=val1  x=\"first\"  1602841605822791506\n  m2,foo=bar  x=\"second\"  1602841605822792000\n"
     "\n # last comment\n", "ns",
     [Line("m1", {"tag1": "val1"}, {"x": "first"}, 1602841605822791506),
      Line("m2", {"foo": "bar"}, {"x": "second"}, 1602841605822792000)]),
    ("multiple-entries-with-error#1", "\nm1 value=12.0\nm2 value=2a.0\nm3 value=32.0\nm4 value=42.0\n", "ns",
     [Line("m1", {}, {"value": 12.0}), None, Line("m3", {}, {"value": 32.0}), Line("m4", {}, {"value": 42.0})]),
    ("multiple-entries-with-error#2", "\nm1 value=12.0\nm2\nm3 value=32.0\n", "ns",
     [Line("m1", {}, {"value": 12.0}), None, Line("m3", {}, {"value": 32.0})]),
    ("escaped-values",
     '\n comma\\,1,equals\\==e\\,x,two=val2 field\\=x="fir\\"\n,st\\\\"  1602841605822791506\n\n # last comment\n', "ns",
     [Line("comma,1", {"equals=": "e,x", "two": "val2"}, {"field=x": 'fir"\n,st\\'}, 1602841605822791506)]),
    ("missing-quotes", "TestBucket FieldOné=Happy,FieldTwo=sad", "ns", [None]),
    ("trailing-comma-after-measurement", "TestBuckét, FieldOne=Happy\nnext x=1", "ns",
     [None, Line("next", {}, {"x": 1.0})]),
    ("missing-comma-after-field", 'TestBuckét TagOné="Happy" FieldOne=123.45', "ns", [None]),
    ("missing timestamp", "b f=1", "ns", [Line("b", {}, {"f": 1.0})]),
    ("missing timestamp with newline", "b f=1\n", "ns", [Line("b", {}, {"f": 1.0})]),
    ("out-of-range-timestamp", "b f=1 9223372036854775808", "ns", [None]),
    ("out-of-range-timestamp-due-to-precision", "b f=1 200000000000000000", "s", [None]),
    ("negative-timestamp-just-in-range", "b f=1 -9223372036854775808", "ns",
     [Line("b", {}, {"f": 1.0}, -9223372036854775808)]),
    ("negative-timestamp-just-out-of-range", "b f=1 -9223372036854775809", "ns", [None]),
    ("missing-timestamp-with-default", "b f=1", "ns", [Line("b", {}, {"f": 1.0})]),
    ("field-with-space-and-no-timestamp", "9 f=-7 ", "ns", [Line("9", {}, {"f": -7.0})]),
    ("carriage-returns", "# foo\r\nm x=1\r\n\r\n", "ns", [Line("m", {}, {"x": 1.0})]),
    ("carriage-return-in-comment", "# foo\rxxx\nm x=1\r\n\r\n", "ns", [None, Line("m", {}, {"x": 1.0})]),
    ("out-of-range-value", "mmmé é=1e9999999999999", "ns", [None]),
    ("field-key-error-after-newline-in-string", "m f=1,\x01=1,\x01=2", "ns", [None]),
    ("field-value-error-after-newline-in-string", 'm f="hello\ngoodbye\nx",gé=invalid', "ns", [None]),
    ("field-string-value-error-after-newline-in-string", 'm f="a\nb",g="c\nd', "ns", [None]),
    ("non-printable-ASCII-in-tag-key", "m foo\x01=bar x=1", "ns", [None]),
    ("non-printable-ASCII-in-tag-key", "m,foo\x03=bar x=1", "ns", [None]),
    ("non-printable-ASCII-in-tag-value", "m,foo=bar\x02 x=1", "ns", [None]),
    ("non-printable-ASCII-in-field-key", "m foo\x01=bar", "ns", [None]),
    ("backslash-escapes-in-string-field", 'm s="\\t\\r\\n\\v"', "ns", [Line("m", {}, {"s": "\t\r\n\\v"})]),
    ("backslash-escapes-in-tags", "m,s=\\t\\r\\n\\v x=1", "ns", [Line("m", {"s": "\\t\\r\\n\\v"}, {"x": 1.0})]),
    ("bad-tag-key-#1", "m", "ns", [None]),
    ("bad-tag-key-#2", "m,=bar¹", "ns", [None]),
    ("bad-tag-key-#3", "m,x =y¹", "ns", [None]),
    ("bad-tag-key-#4", "m,x", "ns", [None]),
]
