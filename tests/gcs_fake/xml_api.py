"""A fake of Cloud Storage's XML API, path style
(https://storage.googleapis.com/BUCKET/OBJECT,
https://cloud.google.com/storage/docs/xml-api/overview), for the calls the
`object_store` crate's GCS client makes, on top of gcp-storage-emulator's
storage (so an object written here is the object its JSON API lists and
serves, and the other way round). The emulator answers these calls 501 or
not at all; this layer answers them as GCS does:

| request | GCS's name | answer |
|---|---|---|
| `GET /BUCKET?list-type=2` (`prefix`, `delimiter`, `max-keys`, `continuation-token`, `start-after`) | List objects (V2) | `ListBucketResult` |
| `PUT /BUCKET/OBJECT` (`x-goog-if-generation-match`) | PUT Object | `ETag`, `x-goog-generation`, `x-goog-hash` |
| `GET`/`HEAD /BUCKET/OBJECT` (`Range`) | GET Object | the bytes; `ETag`, `Last-Modified`, `x-goog-generation`, `x-goog-stored-content-length` |
| `DELETE /BUCKET/OBJECT` | DELETE Object | 204 |
| `POST /BUCKET/OBJECT?uploads` | Initiate multipart upload | `InitiateMultipartUploadResult` |
| `PUT /BUCKET/OBJECT?partNumber=N&uploadId=U` | Upload part | `ETag` of the part |
| `POST /BUCKET/OBJECT?uploadId=U` | Complete multipart upload | `CompleteMultipartUploadResult`; parts checked (ascending, ETags, 5 MiB but the last) |
| `DELETE /BUCKET/OBJECT?uploadId=U` | Abort multipart upload | 204 |

Errors are GCS's XML bodies (`<Error><Code>NoSuchBucket</Code>...`) with
its status codes. Bucket and object names arrive percent-encoded
(`contexts%2D1/a%2Fb.tgz`) and are decoded. Parts of an unfinished upload
are kept in memory and invisible, as in GCS. Credentials are checked by
serve.py before this layer runs.
"""

import base64
import hashlib
import http
import re
import secrets
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from email.utils import format_datetime

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

# The paths of the emulator's JSON API and its own endpoints; everything
# else is the XML API.
_JSON_PREFIXES = ("/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/", "/batch/", "/b/")
_MIN_PART = 5 * 1024 * 1024
_MAX_KEYS = 1000

# upload id -> {"bucket", "object", "parts": {number: (etag, bytes)}}
_UPLOADS = {}


def is_xml_request(path):
    """Whether `path` (with its query) is an XML API request."""
    bare = urllib.parse.unquote(path.split("?", 1)[0])
    if bare in ("/", "/wipe") or bare.startswith(_JSON_PREFIXES):
        return False
    return re.fullmatch(r"/[-.\w]{3,222}(/.*)?", bare) is not None


def error_body(code, message, details=None):
    """GCS's XML error document."""
    extra = f"<Details>{_escape(details)}</Details>" if details else ""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{_escape(message)}</Message>{extra}</Error>"
    ).encode()


def _escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def handle(handler, method):
    """Answers one XML API request on `handler` (a BaseHTTPRequestHandler
    whose `storage` is the emulator's)."""
    parsed = urllib.parse.urlsplit(handler.path)
    query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
    bucket, _, name = parsed.path.lstrip("/").partition("/")
    bucket, name = urllib.parse.unquote(bucket), urllib.parse.unquote(name)
    storage = handler.storage
    body = _read_body(handler)
    if storage.get_bucket(bucket) is None:
        return _send_error(handler, 404, "NoSuchBucket", "The specified bucket does not exist.",
                           f"No such bucket: {bucket}")
    if not name:
        if method == "GET":
            return _list(handler, storage, bucket, query)
        return _send_error(handler, 405, "MethodNotAllowed",
                           "The specified method is not allowed against this resource.")
    if method == "POST" and "uploads" in query:
        return _initiate(handler, bucket, name)
    if "uploadId" in query:
        upload_id = query["uploadId"][0]
        upload = _UPLOADS.get(upload_id)
        if upload is None or (upload["bucket"], upload["object"]) != (bucket, name):
            return _send_error(handler, 404, "NoSuchUpload",
                               "The requested upload was not found.")
        if method == "PUT" and "partNumber" in query:
            return _put_part(handler, upload, query["partNumber"][0], body)
        if method == "POST":
            return _complete(handler, storage, upload_id, upload, body)
        if method == "DELETE":
            del _UPLOADS[upload_id]
            return _send(handler, 204)
        return _send_error(handler, 400, "InvalidArgument", "Invalid argument.")
    if method == "PUT":
        return _put(handler, storage, bucket, name, body)
    if method in ("GET", "HEAD"):
        return _get(handler, storage, bucket, name, head=method == "HEAD")
    if method == "DELETE":
        try:
            storage.delete_file(bucket, name)
        except NotFound:
            return _no_such_key(handler, bucket, name)
        return _send(handler, 204)
    return _send_error(handler, 405, "MethodNotAllowed",
                       "The specified method is not allowed against this resource.")


def _read_body(handler):
    length = handler.headers.get("Content-Length")
    if length:
        return handler.rfile.read(int(length))
    if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
        data = bytearray()
        while True:
            size = int(handler.rfile.readline().strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(data)
            data += handler.rfile.read(size)
            handler.rfile.readline()
    return b""


def _send(handler, status, body=b"", headers=(), content_type=None, head=False):
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    if content_type:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body and not head:
        handler.wfile.write(body)


def _send_error(handler, status, code, message, details=None):
    _send(handler, status, error_body(code, message, details),
          content_type="application/xml; charset=UTF-8")


def _no_such_key(handler, bucket, name):
    _send_error(handler, 404, "NoSuchKey", "The specified key does not exist.",
                f"No such object: {bucket}/{name}")


def _etag(data):
    return '"' + hashlib.md5(data).hexdigest() + '"'


def _object_headers(obj):
    updated = datetime.strptime(obj["updated"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc)
    return [
        ("ETag", '"' + base64.b64decode(obj["md5Hash"]).hex() + '"'),
        ("Last-Modified", format_datetime(updated, usegmt=True)),
        ("x-goog-generation", obj["generation"]),
        ("x-goog-metageneration", obj["metageneration"]),
        ("x-goog-hash", f"crc32c={obj['crc32c']}"),
        ("x-goog-hash", f"md5={obj['md5Hash']}"),
        ("x-goog-stored-content-length", str(obj["size"])),
        ("x-goog-storage-class", obj.get("storageClass", "STANDARD")),
    ]


def _store(handler, storage, bucket, name, data, content_type=None):
    """Writes object `name`; returns its resource."""
    content_type = content_type or handler.headers.get("Content-Type") or "application/octet-stream"
    obj = objects._make_object_resource(
        f"http://{handler.headers.get('Host', '')}", bucket, name, content_type, str(len(data)))
    metadata = {k[len("x-goog-meta-"):]: v for k, v in handler.headers.items()
                if k.lower().startswith("x-goog-meta-")}
    if metadata:
        obj["metadata"] = metadata
    obj = objects._checksums(data, obj)
    storage.create_file(bucket, name, data, obj)
    return obj


def _generation_mismatch(handler, storage, bucket, name):
    wanted = handler.headers.get("x-goog-if-generation-match")
    if wanted is None:
        return False
    try:
        current = storage.get_file_obj(bucket, name)["generation"]
    except NotFound:
        current = "0"
    return wanted != current


def _put(handler, storage, bucket, name, data):
    if _generation_mismatch(handler, storage, bucket, name):
        return _send_error(handler, 412, "PreconditionFailed",
                           "At least one of the pre-conditions you specified did not hold.")
    obj = _store(handler, storage, bucket, name, data)
    _send(handler, 200, headers=_object_headers(obj))


def _get(handler, storage, bucket, name, head):
    try:
        obj = storage.get_file_obj(bucket, name)
        data = storage.get_file(bucket, name, show_error=False)
    except NotFound:
        return _no_such_key(handler, bucket, name) if not head else _send(handler, 404, head=True)
    headers = _object_headers(obj)
    status = 200
    wanted = handler.headers.get("Range")
    if wanted:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        size = len(data)
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start, end = max(size - int(match.group(2)), 0), size - 1
            if start >= size or start > end:
                return _send_error(handler, 416, "InvalidRange",
                                   "The requested range cannot be satisfied.")
            headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            data = data[start:end + 1]
            status = 206
    _send(handler, status, data, headers, obj.get("contentType"), head=head)


def _list(handler, storage, bucket, query):
    one = lambda key, default=None: query.get(key, [default])[0]  # noqa: E731
    if one("list-type") != "2":
        return _send_error(handler, 400, "InvalidArgument",
                           "Only list-type=2 is served by this fake.")
    prefix = one("prefix", "")
    delimiter = one("delimiter") or None
    max_keys = min(int(one("max-keys", _MAX_KEYS)), _MAX_KEYS)
    after = one("start-after", "")
    token = one("continuation-token")
    if token:
        after = max(after, base64.urlsafe_b64decode(token.encode()).decode())
    items, prefixes = storage.get_file_list(bucket, prefix or None, delimiter)
    entries = [(o["name"], o) for o in items] + [(p, None) for p in prefixes]
    entries = sorted((e for e in entries if e[0] > after), key=lambda e: e[0])
    page, rest = entries[:max_keys], entries[max_keys:]
    root = ET.Element("ListBucketResult", xmlns="http://doc.s3.amazonaws.com/2006-03-01")
    ET.SubElement(root, "Name").text = bucket
    ET.SubElement(root, "Prefix").text = prefix
    if delimiter:
        ET.SubElement(root, "Delimiter").text = delimiter
    ET.SubElement(root, "KeyCount").text = str(len(page))
    ET.SubElement(root, "MaxKeys").text = str(max_keys)
    ET.SubElement(root, "IsTruncated").text = "true" if rest else "false"
    if rest:
        ET.SubElement(root, "NextContinuationToken").text = base64.urlsafe_b64encode(
            page[-1][0].encode()).decode()
    for key, obj in page:
        if obj is None:
            ET.SubElement(ET.SubElement(root, "CommonPrefixes"), "Prefix").text = key
            continue
        contents = ET.SubElement(root, "Contents")
        ET.SubElement(contents, "Key").text = key
        ET.SubElement(contents, "Generation").text = obj["generation"]
        ET.SubElement(contents, "MetaGeneration").text = obj["metageneration"]
        ET.SubElement(contents, "LastModified").text = obj["updated"]
        ET.SubElement(contents, "ETag").text = dict(_object_headers(obj))["ETag"]
        ET.SubElement(contents, "Size").text = str(obj["size"])
    _send(handler, 200, b"<?xml version='1.0' encoding='UTF-8'?>" + ET.tostring(root),
          content_type="application/xml; charset=UTF-8")


def _initiate(handler, bucket, name):
    upload_id = secrets.token_urlsafe(32)
    _UPLOADS[upload_id] = {"bucket": bucket, "object": name, "parts": {},
                           "content_type": handler.headers.get("Content-Type")}
    root = ET.Element("InitiateMultipartUploadResult",
                      xmlns="http://s3.amazonaws.com/doc/2006-03-01/")
    ET.SubElement(root, "Bucket").text = bucket
    ET.SubElement(root, "Key").text = name
    ET.SubElement(root, "UploadId").text = upload_id
    _send(handler, 200, b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root),
          content_type="application/xml; charset=UTF-8")


def _put_part(handler, upload, number, data):
    if not number.isdigit() or not 1 <= int(number) <= 10000:
        return _send_error(handler, 400, "InvalidArgument",
                           "Part number must be an integer between 1 and 10000, inclusive.")
    etag = _etag(data)
    upload["parts"][int(number)] = (etag, data)
    _send(handler, 200, headers=[("ETag", etag)])


def _complete(handler, storage, upload_id, upload, body):
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return _send_error(handler, 400, "MalformedXML",
                           "The XML you provided was not well-formed.")
    listed = []
    for part in root.iter():
        if part.tag.rsplit("}", 1)[-1] != "Part":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in part}
        listed.append((int(fields.get("PartNumber", "0")), fields.get("ETag", "")))
    if not listed:
        return _send_error(handler, 400, "MalformedXML", "No parts were specified.")
    numbers = [n for n, _ in listed]
    if numbers != sorted(set(numbers)):
        return _send_error(handler, 400, "InvalidPartOrder",
                           "The list of parts was not in ascending order.")
    chunks = []
    for i, (number, etag) in enumerate(listed):
        stored = upload["parts"].get(number)
        if stored is None or stored[0].strip('"') != etag.strip('"'):
            return _send_error(handler, 400, "InvalidPart",
                               "One or more of the specified parts could not be found.")
        if i != len(listed) - 1 and len(stored[1]) < _MIN_PART:
            return _send_error(handler, 400, "EntityTooSmall",
                               "Your proposed upload is smaller than the minimum allowed object size.")
        chunks.append(stored[1])
    obj = _store(handler, storage, upload["bucket"], upload["object"], b"".join(chunks),
                 upload["content_type"] or "application/octet-stream")
    del _UPLOADS[upload_id]
    etag = dict(_object_headers(obj))["ETag"]
    result = ET.Element("CompleteMultipartUploadResult",
                        xmlns="http://s3.amazonaws.com/doc/2006-03-01/")
    host = handler.headers.get("Host", "")
    ET.SubElement(result, "Location").text = (
        f"http://{host}/{upload['bucket']}/{urllib.parse.quote(upload['object'])}")
    ET.SubElement(result, "Bucket").text = upload["bucket"]
    ET.SubElement(result, "Key").text = upload["object"]
    ET.SubElement(result, "ETag").text = etag
    headers = [(k, v) for k, v in _object_headers(obj) if k == "x-goog-generation"]
    _send(handler, 200, b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(result),
          headers=headers, content_type="application/xml; charset=UTF-8")
