"""An independent SOAP client for the gateway's tests: Python zeep, to compare answers with.

Usage: zeep_client.py WSDL_URL OPERATION JSON_KWARGS [--address URL]
                      [--username U --password P [--digest]] [--envelope]

WSDL_URL is a URL or a file path. JSON_KWARGS is a JSON object of the operation's arguments in
zeep's shape (element name -> value; an array wrapper type is an object holding its item
element, e.g. {"lines": {"Line": [{"sku": "a", "quantity": 1, "price": "2.50"}]}}; dates and
decimals as strings); a JSON array instead is the positional arguments, and any other JSON
value the one positional argument (a bare operation whose part is a simple type, e.g. "inv-1"
for spyne_server.py --bare's GetInvoice). --address sends to URL instead of the address in the
WSDL (the first service's first port's binding, bound to URL). --username/--password add a
WS-Security UsernameToken, PasswordText, or PasswordDigest with a fresh nonce and Created under
--digest.

Prints one line of JSON on stdout, exit status 0:
  {"result": R}   R is zeep.helpers.serialize_object(answer, dict) as JSON: dates, times and
                  datetimes as ISO 8601 strings, Decimal as a string ("21.00", exactly as
                  parsed), bytes as base64, absent or nil elements as null. zeep unwraps a
                  response with one child: GetInvoice gives the Invoice object, ListInvoices
                  the list of invoices (null when empty: <ListInvoicesResult/>), while a nested
                  array stays wrapped ({"lines": {"Line": [...]}})
  {"fault": {"code": C, "message": M, "detail": D, "subcodes": S}}
                  C the faultcode (SOAP 1.1) or Code/Value (SOAP 1.2) text as sent, with its
                  prefix (e.g. "soap11env:Client.NotFound", "soap12env:Sender"); M the
                  faultstring or Reason/Text; D the detail / Detail element serialized as XML
                  text, or null; S the SOAP 1.2 Subcode values as QName strings, "{ns}local" or
                  just "local" when unprefixed as spyne sends them ("NotFound"); [] for SOAP 1.1
Anything else (transport error, bad arguments) is a traceback and exit status 1.

--envelope does not call: it prints the request envelope zeep would send (with the
UsernameToken when asked for), as the bytes zeep sends (XML declaration, UTF-8, no newline
added), and on stderr one line "headers JSON" with the HTTP headers zeep would add: SOAPAction
(quoted, sent for SOAP 1.2 too) and Content-Type (with action="..." for SOAP 1.2).
"""

import argparse
import base64
import datetime
import decimal
import json
import sys

import zeep
import zeep.helpers
from lxml import etree
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, etree._Element):
        return etree.tostring(value, encoding="unicode")
    return value


def main():
    parser = argparse.ArgumentParser(description="zeep SOAP test client")
    parser.add_argument("wsdl")
    parser.add_argument("operation")
    parser.add_argument("kwargs")
    parser.add_argument("--address")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--envelope", action="store_true")
    args = parser.parse_args()
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")

    wsse = None
    if args.username is not None:
        wsse = UsernameToken(args.username, args.password, use_digest=args.digest)
    client = zeep.Client(args.wsdl, wsse=wsse)
    if args.address:
        service_def = next(iter(client.wsdl.services.values()))
        port = next(iter(service_def.ports.values()))
        service = client.create_service(port.binding.name, args.address)
    else:
        service = client.service
    given = json.loads(args.kwargs)
    if isinstance(given, dict):
        call_args, kwargs = (), given
    elif isinstance(given, list):
        call_args, kwargs = tuple(given), {}
    else:
        call_args, kwargs = (given,), {}

    if args.envelope:
        envelope, headers = service._binding._create(args.operation, call_args, kwargs, client=client)
        sys.stdout.buffer.write(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))
        sys.stdout.flush()
        print("headers", json.dumps(dict(headers)), file=sys.stderr)
        return

    try:
        result = getattr(service, args.operation)(*call_args, **kwargs)
    except Fault as fault:
        out = {
            "fault": {
                "code": fault.code,
                "message": fault.message,
                "detail": None if fault.detail is None else etree.tostring(fault.detail, encoding="unicode"),
                "subcodes": [str(s) for s in (fault.subcodes or [])],
            }
        }
    else:
        out = {"result": plain(zeep.helpers.serialize_object(result, dict))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
