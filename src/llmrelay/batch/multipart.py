"""multipart/form-data bodies (file uploads): read with ``python-multipart``, which the gateway and
the simulator's ``POST /v1/files`` share."""

from __future__ import annotations

from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from ..errors import InvalidRequestError


def form_parts(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, content)."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequestError(
            "Upload files as multipart/form-data with a 'file' part and purpose=batch.", param="file"
        )
    parts: dict[str, tuple[str | None, bytes]] = {}
    current: dict[str, Any] = {}
    header = [b"", b""]

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        current["headers"][header[0].lower()] = header[1]
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(current["headers"].get(b"content-disposition"))
        name = disposition.get(b"name")
        if name is not None:
            filename = disposition.get(b"filename")
            parts[name.decode("utf-8", "replace")] = (
                filename.decode("utf-8", "replace") if filename is not None else None,
                b"".join(current["data"]),
            )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # the parser's errors share no useful base class
        raise InvalidRequestError(f"The multipart body could not be read: {exc}", param="file") from None
    return parts
