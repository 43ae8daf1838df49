"""XML parsing for ECG exports, hardened: no entity expansion, no DTD loading, no network.

Exports arrive from outside (carts, archives, other hospitals). libxml2 (through lxml) parses
with entity substitution, DTD loading and network access off and its size/depth limits on; a
document that declares any entity at all (the billion-laughs bomb, an external entity, a
parameter entity) is then refused outright. Size is bounded before anything is built: at most
``MAX_XML_BYTES`` (readers check the file size before reading it), ``MAX_XML_MARKUP`` '<' in the
bytes (one cheap scan: 60 MB of ``<a/>`` would otherwise be a 2 GB tree), and ``MAX_XML_DEPTH``
levels of nesting (libxml2 itself stops at 256). lxml rather than defusedxml: defusedxml's
pure-Python expat callbacks took 4.5 ms on a 10-s HL7 aECG that libxml2 parses in 1.1 ms.

Readers select elements by local name whatever the namespace (HL7 and Philips 1.03 declare one,
MUSE none): ``find(element, "component/sequenceSet")`` looks up ``{*}component/{*}sequenceSet``.
Renaming every element instead cost 1 ms per HL7 file.
"""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

from ecg_atlas.errors import InvalidECGError

from .common import MAX_XML_BYTES, MAX_XML_DEPTH, MAX_XML_MARKUP

#: libxml2 errors that mean the document tried entity tricks (not merely that it is broken).
_UNSAFE = ("amplification", "external entity", "entity reference loop", "entitydecl")
#: True when any element nests deeper than MAX_XML_DEPTH (compiled XPath: ~0.05 ms on a real export).
_TOO_DEEP = etree.XPath("boolean(" + "/*" * (MAX_XML_DEPTH + 1) + ")")


def parse_xml(data: bytes, what: str) -> etree._Element:
    """The root element of ``data``; the BOM or XML declaration picks the encoding (UTF-16 too)."""
    if len(data) > MAX_XML_BYTES:
        raise InvalidECGError(f"{what} is {len(data) / 2**20:.1f} MiB of XML; XML exports over "
                              f"{MAX_XML_BYTES // 2**20} MiB are refused", reason="too_large")
    markup = data.count(b"<")  # >= the number of elements, whatever the encoding
    if markup > MAX_XML_MARKUP:
        raise InvalidECGError(f"{what} holds {markup} XML tags; an ECG export has a few thousand (at most "
                              f"{MAX_XML_MARKUP} are parsed)", reason="too_large")
    parser = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                             remove_comments=True, remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        message = str(error)
        if any(word in message.lower() for word in _UNSAFE):  # libxml2 stopped an expansion or an external reference
            raise InvalidECGError(f"{what} uses XML entities that are refused for safety ({message})",
                                  reason="unsafe_xml") from error
        if "excessive depth" in message.lower():
            raise InvalidECGError(f"{what} nests XML elements deeper than {MAX_XML_DEPTH} levels",
                                  reason="too_large") from error
        reason = "truncated" if "Premature end" in message or "EndTag" in message else "unreadable"
        raise InvalidECGError(f"{what} is not well-formed XML ({message})", reason=reason) from error
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise InvalidECGError(f"{what} declares XML entities in its DOCTYPE (entity expansion bombs and "
                              f"external entities are refused for safety)", reason="unsafe_xml")
    if _TOO_DEEP(root):
        raise InvalidECGError(f"{what} nests XML elements deeper than {MAX_XML_DEPTH} levels", reason="too_large")
    return root


@lru_cache(maxsize=256)
def any_namespace(path: str) -> str:
    """``a/.//b`` -> ``{*}a/.//{*}b``: the same path with every step in any (or no) namespace."""
    return "/".join(step if step in ("", ".", "..", "*") else "{*}" + step for step in path.split("/"))


def local_name(element: etree._Element) -> str:
    return etree.QName(element).localname


def find(element: etree._Element | None, path: str) -> etree._Element | None:
    return None if element is None else element.find(any_namespace(path))


def iterfind(element: etree._Element, path: str):
    return element.iterfind(any_namespace(path))


def text(element: etree._Element | None, path: str, default: str = "") -> str:
    """Stripped text of the first match of ``path`` under ``element`` ('' when absent)."""
    found = find(element, path)
    if found is None or found.text is None:
        return default
    return found.text.strip()
