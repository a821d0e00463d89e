"""Test documents: small real PDFs written with pyHanko's writer."""

from __future__ import annotations

import io

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.writer import PdfFileWriter


def make_pdf(pages: int = 1, *, title: str | None = "Antrag auf Anwohnerparkausweis") -> bytes:
    writer = PdfFileWriter()
    font = generic.DictionaryObject(
        {
            generic.NameObject("/Type"): generic.NameObject("/Font"),
            generic.NameObject("/Subtype"): generic.NameObject("/Type1"),
            generic.NameObject("/BaseFont"): generic.NameObject("/Helvetica"),
        }
    )
    font_ref = writer.add_object(font)
    for n in range(pages):
        content = f"BT /F1 14 Tf 72 760 Td (Seite {n + 1}: Antrag der Stadt Musterstadt) Tj ET".encode()
        stream = writer.add_object(generic.StreamObject(stream_data=content))
        page = generic.DictionaryObject(
            {
                generic.NameObject("/Type"): generic.NameObject("/Page"),
                generic.NameObject("/MediaBox"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (0, 0, 595, 842)]
                ),
                generic.NameObject("/Contents"): stream,
                generic.NameObject("/Resources"): generic.DictionaryObject(
                    {
                        generic.NameObject("/Font"): generic.DictionaryObject(
                            {generic.NameObject("/F1"): font_ref}
                        )
                    }
                ),
            }
        )
        writer.insert_page(page)
    if title is not None:
        writer.set_info(
            generic.DictionaryObject({generic.NameObject("/Title"): generic.TextStringObject(title)})
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
