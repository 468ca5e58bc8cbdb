"""Reading a prediction call's body: bounded before a byte is read, decoded by orjson, and its
shape ({"rows": [...]}) checked. The rows' values are checked by modelhub.inputs, as on the
predict page and in batch scoring.

The body is read here rather than by ninja, so that this call alone may carry more than
Django's request-body limit (DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB: about 5,000 rows of the
demo's 19 features) up to settings.CL_PREDICT_MAX_BYTES, and so that decoding costs a fraction
of what the standard library and pydantic take on 10,000 rows.
"""
import orjson
from django.conf import settings


class BodyError(Exception):
    def __init__(self, status: int, message: str, field: str = "body"):
        super().__init__(message)
        self.status = status
        self.field = field


def read_rows(request) -> list:
    """The body's `rows`, or BodyError with the status to answer (400, 413)."""
    limit = settings.CL_PREDICT_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BodyError(400, "the Content-Length header is not a number") from None
    if length > limit:
        raise BodyError(413, f"the body is {length:,} bytes; a prediction call takes at most {limit:,} bytes "
                             f"(10,000 rows of up to 100 features): send the rows in several calls")
    try:
        body = orjson.loads(request.read(length) if length else request.body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"the body is not JSON ({exc})") from None
    if type(body) is not dict or "rows" not in body:
        raise BodyError(400, 'send a JSON object {"rows": [{feature: value, ...}, ...]}')
    if type(body["rows"]) is not list:
        raise BodyError(400, "`rows` must be a list of objects {feature: value}", field="rows")
    return body["rows"]
