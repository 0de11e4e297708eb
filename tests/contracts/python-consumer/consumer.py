"""A consumer of the Annals JetStream stream, in Python, as a contract.

It reads every message of the stream with an ordered consumer (nats-py), and checks
what it relies on (expectations.json, owned by this consumer):

- the CloudEvents headers of every message (binary content mode of the NATS binding),
  and that ce-subject names a stream of ce-type's category;
- the dense positions and the links of the hash chain (Annals-Prev-Hash of each message
  is the Annals-Hash of the one before), which need no decoding;
- every JSON body against the published schema its ce-dataschema names, fetched from
  the server (GET /api/v1/schemas/events/<type>/<version>) and checked to be a valid
  JSON Schema 2020-12 whose $id is that URN;
- for the event types it handles: that each arrives at least once, as JSON, with the
  fields it reads, of the types it reads them as.

Exits 0 when all holds, 1 listing every violation, 2 when it cannot run at all.

    python consumer.py --nats-url nats://127.0.0.1:4222 --api-url http://127.0.0.1:8080 \
        [--expectations expectations.json] [--timeout 10]
"""

import argparse
import asyncio
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import nats
from nats.js.api import DeliverPolicy

JSON_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}


def percent_decode(text):
    """The NATS binding's header values: percent-encoded UTF-8."""
    return urllib.parse.unquote(text, errors="strict")


def check_header(name, rule, headers, violations, where):
    value = headers.get(name)
    if value is None:
        violations.append(f"{where}: header {name} is missing")
        return
    if "equals" in rule and value != rule["equals"]:
        violations.append(f"{where}: header {name} is {value!r}, expected {rule['equals']!r}")
    if "one_of" in rule and value not in rule["one_of"]:
        violations.append(f"{where}: header {name} is {value!r}, expected one of {rule['one_of']}")
    if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
        violations.append(f"{where}: header {name} {value!r} does not match {rule['pattern']}")
    if "same_as" in rule and value != headers.get(rule["same_as"]):
        violations.append(
            f"{where}: header {name} is {value!r}, not the same as {rule['same_as']} "
            f"({headers.get(rule['same_as'])!r})"
        )


class Schemas:
    """The published schemas, fetched once each from the server."""

    def __init__(self, api_url):
        self.api_url = api_url.rstrip("/")
        self.validators = {}

    def validator(self, urn):
        if urn in self.validators:
            return self.validators[urn]
        match = re.fullmatch(r"urn:annals:schema:event:([A-Za-z0-9]+):([0-9]+)", urn)
        if not match:
            raise LookupError(f"ce-dataschema {urn!r} is not an Annals event schema URN")
        url = f"{self.api_url}/api/v1/schemas/events/{match[1]}/{match[2]}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                schema = json.load(response)
        except urllib.error.HTTPError as error:
            raise LookupError(f"the schema {urn} is not published: GET {url} answered {error.code}")
        except (urllib.error.URLError, ValueError) as error:
            raise LookupError(f"the schema {urn} could not be read from {url}: {error}")
        jsonschema.Draft202012Validator.check_schema(schema)
        if schema.get("$id") != urn:
            raise LookupError(f"the schema served at {url} has $id {schema.get('$id')!r}, not {urn}")
        validator = jsonschema.Draft202012Validator(schema)
        self.validators[urn] = validator
        return validator


async def read_stream(nats_url, stream, timeout):
    """Every message of the stream, in order: (headers, body)."""
    client = await nats.connect(nats_url, connect_timeout=timeout)
    try:
        jetstream = client.jetstream()
        info = await jetstream.stream_info(stream)
        total = info.state.messages
        if total == 0:
            return []
        subject = info.config.subjects[0]
        subscription = await jetstream.subscribe(
            subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        messages = []
        while len(messages) < total:
            message = await subscription.next_msg(timeout=timeout)
            messages.append((dict(message.headers or {}), message.data))
        await subscription.unsubscribe()
        return messages
    finally:
        await client.close()


def check(messages, expectations, schemas):
    violations = []
    seen_types = {}
    schemas_used = set()
    previous_hash = "0" * 64
    for index, (headers, body) in enumerate(messages):
        where = f"message {index + 1} ({headers.get('ce-type', '?')})"
        for name, rule in expectations["headers"].items():
            check_header(name, rule, headers, violations, where)
        if headers.get("Annals-Position") != str(index):
            violations.append(
                f"{where}: Annals-Position is {headers.get('Annals-Position')!r}, expected {index} "
                "(positions are dense and in order)"
            )
        if headers.get("Annals-Prev-Hash") != previous_hash:
            violations.append(f"{where}: Annals-Prev-Hash does not link to the message before")
        previous_hash = headers.get("Annals-Hash")
        ce_type = headers.get("ce-type", "")
        category = ce_type.split(".")[1] if ce_type.count(".") == 2 else None
        try:
            stream_id = percent_decode(headers.get("ce-subject", ""))
        except UnicodeDecodeError:
            violations.append(f"{where}: ce-subject is not percent-encoded UTF-8")
            stream_id = ""
        if category is not None and stream_id.split("-", 1)[0] != category:
            violations.append(
                f"{where}: ce-subject {stream_id!r} is not a stream of category {category!r}"
            )
        if headers.get("ce-source") != f"/annals/{category}":
            violations.append(f"{where}: ce-source {headers.get('ce-source')!r} is not /annals/{category}")

        content_type = headers.get("ce-datacontenttype")
        relied_on = expectations["events"].get(ce_type)
        if content_type != "application/json":
            if relied_on is not None:
                violations.append(f"{where}: a type this consumer reads came as {content_type}, not JSON")
            continue
        for name, rule in expectations["json_headers"].items():
            check_header(name, rule, headers, violations, where)
        try:
            data = json.loads(body)
        except ValueError as error:
            violations.append(f"{where}: the body is not JSON: {error}")
            continue
        urn = headers.get("ce-dataschema")
        if urn:
            try:
                validator = schemas.validator(urn)
                schemas_used.add(urn)
                for error in validator.iter_errors(data):
                    path = "/".join(str(part) for part in error.absolute_path)
                    violations.append(f"{where}: data does not follow {urn} at /{path}: {error.message}")
            except (LookupError, jsonschema.SchemaError) as error:
                violations.append(f"{where}: {error}")
        if relied_on is not None:
            seen_types[ce_type] = seen_types.get(ce_type, 0) + 1
            if not isinstance(data, dict):
                violations.append(f"{where}: data is not an object: {data!r}")
                continue
            for field, type_name in relied_on.items():
                expected = JSON_TYPES[type_name]
                value = data.get(field)
                if field not in data:
                    violations.append(f"{where}: data has no field {field!r} (this consumer reads it)")
                elif not isinstance(value, expected) or (
                    type_name in ("integer", "number") and isinstance(value, bool)
                ):
                    violations.append(
                        f"{where}: data field {field!r} is {value!r}, expected a {type_name}"
                    )
    for ce_type in expectations["events"]:
        if ce_type not in seen_types:
            violations.append(f"no message of type {ce_type} arrived as JSON (this consumer handles it)")
    return violations, seen_types, schemas_used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument(
        "--expectations", default=str(Path(__file__).with_name("expectations.json"))
    )
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    expectations = json.loads(Path(args.expectations).read_text())
    try:
        messages = asyncio.run(read_stream(args.nats_url, expectations["stream"], args.timeout))
    except Exception as error:  # noqa: BLE001 - any failure to read is reported and fatal
        print(f"python-consumer: cannot read the stream: {error!r}", file=sys.stderr)
        return 2
    violations, seen_types, schemas_used = check(messages, expectations, Schemas(args.api_url))
    if violations:
        print(f"python-consumer: {len(violations)} contract violation(s):", file=sys.stderr)
        for violation in violations:
            print(f"  - {violation}", file=sys.stderr)
        return 1
    json_messages = sum(seen_types.values())
    print(
        f"python-consumer: ok: {len(messages)} messages, {len(seen_types)} relied-on types "
        f"({json_messages} messages of them), {len(schemas_used)} schemas validated against"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
