"""schemathesis hooks of scripts/fuzz-api (docs/adr/0015-api-fuzzing.md).

Every check runs, `positive_data_acceptance` included. The OpenAPI documents state every rule
that JSON Schema can state, so a schema-valid request must succeed. Two kinds of rule depend on
the data rather than on the request's shape, and a generator that knows only the schema cannot
satisfy them. This module handles exactly those, and nothing else:

- An `Idempotency-Key` (or a message's `client_id`) names one logical request; sending the
  same key with another body, or after its post was deleted, is a retry by contract, not a new
  request. Valid generated keys are therefore replaced by a fresh one before each call.
- Refusals whose reason is state, answered with their own stable problem type (below), are
  not counted as rejected valid data. Any other 4xx answer to schema-valid data still fails.
"""

import re
import uuid

import schemathesis

# Problem types (the `code` of our problem+json) whose cause no schema can state, and why.
STATE_DEPENDENT = {
    # A cursor is opaque: only a `next_cursor` the endpoint issued decodes.
    "invalid_cursor",
    # Parameters each valid, not valid together (cursor with a position; a title on a direct
    # conversation; client_id differing from Idempotency-Key). OpenAPI has no such constraint.
    "conflicting_parameters",
    # Following, blocking or messaging yourself: whether an id is yours depends on who asks.
    "self_action",
    # A well-formed id in the body that names nothing (reply_to, participant ids).
    "unknown_reference",
    # The account's password, confirming a deletion or a password change.
    "wrong_password",
    # Limits of what already exists: follows per account, people per group.
    "follow_limit_reached",
    "group_full",
    # Adding people to a conversation that turns out to be a direct one.
    "not_a_group",
}

VISIBLE_ASCII = re.compile(r"[!-~]{1,255}")


@schemathesis.hook
def before_call(context, case, kwargs):
    # One fresh key per call, for the header and for a message's client_id (the same role):
    # the two must agree when both are sent.
    key = str(uuid.uuid4())
    headers = case.headers or {}
    for name, value in headers.items():
        if name.lower() == "idempotency-key" and isinstance(value, str) and VISIBLE_ASCII.fullmatch(value):
            headers[name] = key
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("client_id"), str) and VISIBLE_ASCII.fullmatch(body["client_id"]):
        body["client_id"] = key


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if "positive_data_acceptance" not in getattr(failure, "checks", ()):
        return True
    try:
        code = response.json().get("code")
    except Exception:
        return True
    content_type = ",".join(response.headers.get("content-type", []))
    return not (content_type.startswith("application/problem+json") and code in STATE_DEPENDENT)
