"""Property-based tests (hypothesis): whatever a client sends to the REST API, or puts in a
permalink, the answer is never a 5xx, never a traceback, and always strict JSON with a
one-line error; a permalink always parses to a view the explorer can draw."""

from __future__ import annotations

import json
from dataclasses import replace
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from explorer import views

GEN = "/api/generate_attention_map"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

huge_ints = st.one_of(st.integers(-3, 12), st.integers(-(2**70), 2**70), st.integers(-(10**300), 10**300))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    huge_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
CHOICES = {"mode": views.modes(), "over": views.OVERS, "norm": views.norms(), "cmap": ("viridis", "magma")}


PLAUSIBLE = {
    "word": st.sampled_from(["dog", "jacket", "Ġdog", "DOG", "the", "<image>", "dgo", " "]),
    "word_index": st.integers(-1, 1300),
    "token_index": st.integers(-1, 1300),
    "layer": st.integers(-1, 2),
    "head": st.integers(-1, 4),
    "image": st.integers(-1, 3),
    "occurrence": st.integers(-3, 3),
    "threshold": st.floats(-1, 2),
    **{name: st.sampled_from(list(allowed)) for name, allowed in CHOICES.items()},
}


def field_value(name: str):
    """Mostly plausible values (so requests get past the first checks), sometimes anything."""
    return st.one_of(PLAUSIBLE[name], PLAUSIBLE[name], json_values)


request_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={name: field_value(name) for name in PLAUSIBLE}),
    st.fixed_dictionaries(  # a well-formed request with odd extras: reaches the heatmap code
        {name: PLAUSIBLE[name] for name in ("word", "layer", "head")},
        optional={name: PLAUSIBLE[name] for name in ("image", "occurrence", "threshold", *CHOICES)}
        | {"extra": json_values},
    ),
)


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant} in a response")

    return json.loads(text, parse_constant=refuse)


def _check(response) -> dict:
    text = response.get_data(as_text=True)
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: how many got a heatmap
    assert response.status_code < 500, text[:300]
    assert response.mimetype == "application/json"
    assert "Traceback" not in text
    body = _strict_json(text)
    assert isinstance(body["success"], bool)
    if response.status_code == 308:  # "/api//x": Flask's redirect to "/api/x", with a JSON body
        assert response.headers["Location"].startswith("/api/")
    if not body["success"]:
        assert response.status_code == 308 or 400 <= response.status_code < 500
        assert "\n" not in body["error"] and len(body["error"]) < 400
        assert "\n" not in body.get("detail", "")
    return body


@FUZZ
@given(body=request_bodies)
def test_generate_never_fails_on_any_json(app, body):
    _check(app.server.test_client().post(GEN, json=body))


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_generate_never_fails_on_any_bytes(app, data):
    _check(app.server.test_client().post(GEN, data=data, content_type="application/json"))


@FUZZ
@given(args=st.dictionaries(st.sampled_from(["image", "x", ""]), st.text(max_size=40), max_size=3))
def test_initialize_never_fails_on_any_query(app, args):
    _check(app.server.test_client().get("/api/initialize?" + urlencode(args)))


@FUZZ
@given(
    segments=st.lists(st.text(max_size=12), min_size=1, max_size=3),  # empty ones make "//"
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
)
def test_any_api_path_and_method_answers_json(app, segments, method):
    path = "/api/" + "/".join(quote(s, safe="") for s in segments)
    response = app.server.test_client().open(path, method=method)
    assert response.status_code < 500
    if method != "HEAD":  # a HEAD answer has no body to parse
        _check(response)


url_values = st.one_of(st.text(max_size=20), huge_ints.map(str), st.sampled_from(["none", "", "-0", "1e3", "٣"]))


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from([*views.URL_KEYS, "other"]), url_values, max_size=8)
    | st.text(max_size=80).map(lambda raw: {"raw": raw}),
)
def test_permalink_always_parses_to_a_drawable_view(state, fields):
    query = fields["raw"] if set(fields) == {"raw"} else urlencode(fields)
    params, problems = views.parse_query(query, state)
    token = params.token if params.token is not None else state.image(params.image).default_token()
    replace(params, token=token).spec(state)  # the library's checks: raises if anything is out of range
    assert all(isinstance(p, str) for p in problems)
    if params.token is not None:
        state.image(params.image).query_of(params.token)  # the token has a stored row
