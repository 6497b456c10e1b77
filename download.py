"""Downloads that resume and never leave a wrong file under the right name: the one downloader of
``tools/weights/zoo.py`` (checkpoints) and ``tools/data/get_kinetics.py`` (the Kinetics archive).

``download(url, dest)`` writes ``dest.part`` and moves it to ``dest`` only when it holds the size the server announced
(and the SHA-256 asked for). A part left by an interrupted run is resumed with an HTTP Range request that carries
``If-Range`` with the version the part came from (its strong ETag, else its Last-Modified date, kept in
``dest.part.version``; RFC 9110 13.1.5): a file that changed on the server since is downloaded again whole, never
assembled from two versions, also from a server that honours Range but not If-Range. A dropped connection keeps the
part for the next run; a full disk is an OutputError that keeps it too.
"""
import hashlib
import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
from typing import Callable, Optional, Type

from tqdm import tqdm

from atomic import stop_when_unwritable
from errors import UserError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = 'slowfast-paddle/1'


class DownloadError(UserError):
    """A download that did not give a complete, verified file; the message names the address."""
    status = 9


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def _total_from(response, have: int, error: Type[Exception]) -> Optional[int]:
    """The whole file's size from a 206's Content-Range or a 200's Content-Length (None: not given)."""
    if response.status == 206:
        span = response.headers.get('Content-Range', '')  # bytes START-END/TOTAL
        if not span.startswith(f'bytes {have}-'):
            raise error(f'{response.url}: asked for the bytes from {have}, got the range {span!r}')
        total = span.rsplit('/', 1)[-1]
        return int(total) if total.isdigit() else None
    length = response.headers.get('Content-Length')
    return int(length) if length and length.isdigit() else None


def _looks_like_html(response, first: bytes) -> bool:
    kind = response.headers.get('Content-Type', '').lower()
    return kind.startswith('text/html') or first.lstrip()[:15].lower().startswith((b'<!doctype html', b'<html'))


def _validator(headers) -> Optional[str]:
    """What names this version of the file on the server: its strong ETag, else its Last-Modified date (RFC 9110
    13.1.5: what If-Range may carry)."""
    etag = headers.get('ETag')
    if etag and not etag.startswith('W/'):
        return etag
    return headers.get('Last-Modified')


def download(url: str, dest: str, sha256: Optional[str] = None, *, error: Type[Exception] = DownloadError,
             unreachable: str = 'check the address and the network, then run the command again',
             expected: str = 'the file', moved: str = 'the address may have moved',
             progress: Optional[Callable[[int], None]] = None, timeout: float = 60) -> str:
    """Download ``url`` to ``dest`` (module docstring); returns the file's SHA-256. Failures raise ``error`` naming the
    address: ``unreachable`` says what to do when the server cannot be reached, ``expected`` what the file is and
    ``moved`` where to look when an HTML page comes instead. ``progress(n)`` is called with each count of bytes
    (a resumed part's first, negative when a resume starts over) instead of a progress bar of this file."""
    part, version_file = dest + '.part', dest + '.part.version'
    have = os.path.getsize(part) if os.path.exists(part) else 0
    version = open(version_file, encoding='utf-8').read().strip() if have and os.path.isfile(version_file) else None
    headers = {'User-Agent': USER_AGENT}
    if have:
        headers['Range'] = f'bytes={have}-'
        if version:
            headers['If-Range'] = version
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as failure:
        if failure.code == 416 and have:  # nothing after the part's end: the part may be the whole file
            total = failure.headers.get('Content-Range', '').rsplit('/', 1)[-1]
            if total.isdigit() and int(total) == have:
                if progress:
                    progress(have)
                return _finish(url, part, dest, sha256, error)
            os.remove(part)
            raise error(f'{url}: the server refused to resume ({failure.code} {failure.reason}); the partial file was '
                        'removed: run the command again') from None
        raise error(f'{url}: HTTP {failure.code} {failure.reason}') from None
    except (urllib.error.URLError, socket.timeout, ConnectionError) as failure:
        reason = getattr(failure, 'reason', failure)
        raise error(f'cannot reach {url} ({reason}): {unreachable}') from None
    with response:
        if response.status == 200 and have:
            logger.info('%s: %s: starting again', url, 'the file changed on the server since the part was downloaded'
                        if version and _validator(response.headers) != version else 'the server does not resume')
            have = 0
        elif response.status == 206 and version and _validator(response.headers) not in (None, version):
            # a server that honours Range but not If-Range: the rest would come from another version
            logger.info('%s: the file changed on the server since the part was downloaded: starting again', url)
            response.close()
            os.remove(part)
            return download(url, dest, sha256, error=error, unreachable=unreachable, expected=expected, moved=moved,
                            progress=progress, timeout=timeout)
        total = _total_from(response, have, error)
        try:
            first = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as failure:
            raise error(f'{url}: the connection broke at once ({type(failure).__name__}): run the command '
                        'again') from None
        if have == 0 and _looks_like_html(response, first):
            raise error(f'{url} sent an HTML page ({response.headers.get("Content-Type")}), not {expected}: '
                        f'{first[:120]!r}...; {moved}')
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        if have == 0:  # the version the part will hold, for a resume's If-Range
            if _validator(response.headers):
                with open(version_file, 'w', encoding='utf-8') as f:
                    f.write(_validator(response.headers) + '\n')
            elif os.path.exists(version_file):
                os.remove(version_file)
        bar = None if progress else tqdm(total=total, initial=have, unit='B', unit_scale=True, unit_divisor=1024,
                                         desc=os.path.basename(dest))
        update = progress or bar.update
        if progress and have:
            progress(have)
        broken = None
        try:
            with open(part, 'ab' if have else 'wb', buffering=0) as f:
                try:
                    while first:
                        _write(f, first, part)
                        update(len(first))
                        first = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as failure:  # dropped mid-way: keep the part
                    broken = failure
                _write(f, None, part)
        finally:
            if bar is not None:
                bar.close()
    size = os.path.getsize(part)
    if broken is not None or (total is not None and size != total):
        raise error(f'{url}: the download stopped after {size} of {total or "?"} bytes'
                    f'{f" ({type(broken).__name__})" if broken else ""}; the part is kept in {part}: run the same '
                    'command again to resume')
    return _finish(url, part, dest, sha256, error)


def _write(f, data: Optional[bytes], part: str) -> None:
    """``data`` appended to the part file (unbuffered: nothing is left to write when it is closed; None: flushed to
    disk); a full disk is an OutputError that keeps the part for the next run to resume."""
    with stop_when_unwritable(part, 'the part is kept: free some space, then run the same command again to resume'):
        if data is None:
            os.fsync(f.fileno())
        view = memoryview(data or b'')
        while view:  # a raw write may take part of it
            view = view[f.write(view):]


def _finish(url: str, part: str, dest: str, sha256: Optional[str], error: Type[Exception]) -> str:
    digest = sha256_of(part)
    if os.path.exists(part + '.version'):  # the part is done with: a rerun starts afresh
        os.remove(part + '.version')
    if sha256 and digest != sha256.lower():
        os.remove(part)
        raise error(f'{url}: SHA-256 {digest} is not the expected {sha256.lower()}; the file was removed')
    os.replace(part, dest)
    return digest
