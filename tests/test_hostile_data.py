"Hostile input for the data path, offline: evil archives from a local server, cut and stalled downloads, odd folders."
import http.server
import io
import os
import socket
import stat
import tarfile
import threading
import time
import zipfile
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from finetune_course import data as data_module
from finetune_course.data import (ArchiveError, DownloadError, dataset_key, download, extract_archive, make_dls,
                                  scan_images, subset_per_class)
from finetune_course.datasets import build_once, current_umask


def _png(colour=(200, 30, 30)) -> bytes:
    "A tiny valid PNG."
    buf = io.BytesIO()
    Image.new('RGB', (16, 16), colour).save(buf, 'PNG')
    return buf.getvalue()


class _Handler(http.server.SimpleHTTPRequestHandler):
    "Files from the site folder; `/short/NAME` announces 4,000 bytes and sends 1,000 (a cut connection)."
    def log_message(self, *args): pass

    def do_GET(self):
        if not self.path.startswith('/short/'):
            return super().do_GET()
        self.send_response(200)
        self.send_header('Content-Length', '4000')
        self.end_headers()
        self.wfile.write(b'x'*1000)


@pytest.fixture
def site(tmp_path):
    "(base URL, folder it serves) for a threaded HTTP server on 127.0.0.1."
    root = tmp_path/'site'
    root.mkdir()
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}', root
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    "A private FTC_HOME."
    home = tmp_path/'ftc'
    monkeypatch.setenv('FTC_HOME', str(home))
    return home


def _outside(tmp_path) -> Path:
    "A unique folder that evil members aim at: it must never appear."
    return tmp_path/f'outside-{os.getpid()}-{time.monotonic_ns()}'


# ---------------------------------------------------------------- evil archives
def _tar(path:Path, evil:tarfile.TarInfo|None=None, extra:list=()) -> Path:
    "A .tgz with two good images (classes a, b), then `extra` members, then `evil`."
    with tarfile.open(path, 'w:gz') as t:
        for c in 'ab':
            m = tarfile.TarInfo(f'ds/{c}/1.png')
            body = _png()
            m.size = len(body)
            t.addfile(m, io.BytesIO(body))
        for m in list(extra) + ([evil] if evil is not None else []):
            t.addfile(m, io.BytesIO(b'evil' if m.isfile() else b''))
    return path


def _member(name, kind=tarfile.REGTYPE, link=''):
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, 4 if kind == tarfile.REGTYPE else 0
    return m


def _up(p:Path) -> str:
    "A relative path that reaches `p` from any folder: enough `..` to reach /, then down."
    return '../'*12 + str(p).lstrip('/')


def _evil_tars(out:Path) -> dict:
    "case -> (member, expected message part); members aim at `out` or overwrite `out.parent/victim.txt`."
    up, victim = _up(out), out.parent/'victim.txt'
    return {
        'dotdot': (_member(f'{up}/dotdot.txt'), 'would be written outside the folder'),
        'absolute': (_member(str(out/'abs.txt')), 'has an absolute path'),
        'symlink-abs': (_member('ds/a/link', tarfile.SYMTYPE, str(out)), 'links to the absolute path'),
        'symlink-rel': (_member('ds/a/link', tarfile.SYMTYPE, up), 'links outside the folder'),
        'hardlink': (_member('ds/a/hard', tarfile.LNKTYPE, str(victim)), 'links to the absolute path'),
        'hardlink-rel': (_member('ds/a/hard', tarfile.LNKTYPE, _up(victim)), 'links outside the folder'),
        'fifo': (_member('ds/a/pipe', tarfile.FIFOTYPE), 'is a device or fifo file'),
    }


def _assert_nothing_outside(out:Path, cache_root:Path):
    "Nothing appeared where the members aimed, the victim is intact, the cache holds no dataset or temporary folder."
    assert not out.exists(), f'{out} was written'
    victim = out.parent/'victim.txt'
    assert not victim.exists() or victim.read_text() == 'keep me'
    data = cache_root/'data'
    assert not data.exists() or not list(data.iterdir()), list(data.iterdir())


@pytest.mark.parametrize('case', list(_evil_tars(Path('/x'))))
def test_evil_tar_is_refused_in_one_line(case, site, tmp_path):
    base, root = site
    out = _outside(tmp_path)
    out.parent.mkdir(exist_ok=True)
    (out.parent/'victim.txt').write_text('keep me')
    member, expected = _evil_tars(out)[case]
    _tar(root/'evil.tgz', member)
    with pytest.raises(ArchiveError) as e:
        download(f'{base}/evil.tgz', dest=tmp_path/'dl')
    msg = str(e.value)
    assert expected in msg and 'refusing to extract' in msg and '\n' not in msg, msg
    assert isinstance(e.value, DownloadError)  # the CLI maps it to exit 2
    _assert_nothing_outside(out, tmp_path/'dl')
    assert not list((tmp_path/'dl'/'archive').glob('*'))  # the refused archive is not kept


def _zip(path:Path, name:str, body:bytes=b'evil', link:bool=False, extra:list=()) -> Path:
    "A .zip with two good images, `extra` (name, target) symlinks, then member `name` (a symlink to `body` if `link`)."
    def symlink(n):
        info = zipfile.ZipInfo(n)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return info
    with zipfile.ZipFile(path, 'w') as z:
        for c in 'ab':
            z.writestr(f'ds/{c}/1.png', _png())
        for n, target in extra:
            z.writestr(symlink(n), target)
        z.writestr(symlink(name) if link else name, body)
    return path


def _evil_zips(out:Path) -> dict:
    up = _up(out)
    return {
        'dotdot': (dict(name=f'{up}/dotdot.txt'), 'would be written outside the folder'),
        'absolute': (dict(name=str(out/'abs.txt')), 'has an absolute path'),
        'symlink-abs': (dict(name='ds/a/link', body=str(out).encode(), link=True), 'links to the absolute path'),
        'symlink-rel': (dict(name='ds/a/link', body=up.encode(), link=True), 'links outside the folder'),
        # each link looks harmless alone (ds/up -> ds/.., m -> ds/up/..), but m really leads above the folder
        'symlink-chain': (dict(name='m', body=b'ds/up/..', link=True, extra=[('ds/up', '..')]), 'links outside'),
    }


@pytest.mark.parametrize('case', list(_evil_zips(Path('/x'))))
def test_evil_zip_is_refused_in_one_line(case, site, tmp_path):
    base, root = site
    out = _outside(tmp_path)
    kwargs, expected = _evil_zips(out)[case]
    _zip(root/'evil.zip', **kwargs)
    with pytest.raises(ArchiveError) as e:
        download(f'{base}/evil.zip', dest=tmp_path/'dl')
    msg = str(e.value)
    assert expected in msg and '\n' not in msg, msg
    _assert_nothing_outside(out, tmp_path/'dl')


def test_tar_symlink_chain_is_refused(tmp_path):
    "ds/up -> .. (lands on the top folder), then m -> ds/up/.. : harmless on paper, really one level above."
    out = _outside(tmp_path)
    chain = [_member('ds/up', tarfile.SYMTYPE, '..'), _member('m', tarfile.SYMTYPE, 'ds/up/..')]
    archive = _tar(tmp_path/'chain.tgz', _member('m/x.txt'), extra=chain)
    with pytest.raises(ArchiveError, match='refusing to extract chain.tgz'):
        extract_archive(archive, tmp_path/'dest')
    assert not (tmp_path/'dest').exists() and not out.exists() and not (tmp_path/'x.txt').exists()


def test_good_archives_extract_and_unwrap(tmp_path):
    for archive in (_tar(tmp_path/'good.tgz'), _zip(tmp_path/'good.zip', 'ds/b/2.png', _png((0, 0, 200)))):
        dest = extract_archive(archive, tmp_path/archive.stem)
        assert sorted(p.name for p in dest.iterdir()) == ['a', 'b']  # the wrapper folder `ds` is unwrapped
        assert not list(tmp_path.glob('.tmp-*'))


def test_caps_on_size_and_members(tmp_path):
    archive = _tar(tmp_path/'big.tgz')
    with pytest.raises(ArchiveError, match='unpacks to more than 100 bytes'):
        extract_archive(archive, tmp_path/'d1', max_bytes=100)
    with pytest.raises(ArchiveError, match='more than 1 members'):
        extract_archive(archive, tmp_path/'d2', max_members=1)
    z = _zip(tmp_path/'big.zip', 'ds/c/1.png', _png())
    with pytest.raises(ArchiveError, match='unpacks to more than'):
        extract_archive(z, tmp_path/'d3', max_bytes=100)
    assert not any(tmp_path.glob('d*')) and not list(tmp_path.glob('.tmp-*'))


def test_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    archive = _tar(tmp_path/'good.tgz')
    def interrupt(tmp, dest): raise KeyboardInterrupt
    monkeypatch.setattr(data_module, '_move_into_place', interrupt)
    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, tmp_path/'dest')
    assert not (tmp_path/'dest').exists() and not list(tmp_path.glob('.tmp-*'))


def test_cli_refuses_evil_archive_with_exit_2(site, tmp_path, cache, capsys):
    from finetune_course.cli import main
    base, root = site
    out = _outside(tmp_path)
    member, _ = _evil_tars(out)['dotdot']
    _tar(root/'evil.tgz', member)
    code = main(['fit', f'{base}/evil.tgz', '--out', str(tmp_path/'run')])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert 'Traceback' not in captured.err + captured.out
    lines = [ln for ln in err.splitlines() if 'refusing to extract' in ln]
    assert len(lines) == 1 and 'would be written outside the folder' in lines[0], err
    assert not out.exists()


# ---------------------------------------------------------------- downloads
def test_truncated_download_is_one_line_and_leaves_no_part(site, tmp_path):
    base, root = site
    with pytest.raises(DownloadError) as e:
        download(f'{base}/short/data.tgz', dest=tmp_path/'dl')
    msg = str(e.value)
    assert 'stopped after 1,000 of 4,000 bytes' in msg and '\n' not in msg, msg
    assert not list((tmp_path/'dl').rglob('*.part')) and not list((tmp_path/'dl').rglob('*.tgz'))


def test_stalling_server_times_out(tmp_path):
    stall = socket.socket()
    stall.bind(('127.0.0.1', 0))
    stall.listen()  # accepts (in the kernel), never answers
    try:
        start = time.monotonic()
        with pytest.raises(DownloadError, match='timed out') as e:
            download(f'http://127.0.0.1:{stall.getsockname()[1]}/data.tgz', dest=tmp_path, timeout=1)
        assert time.monotonic() - start < 5
        assert '\n' not in str(e.value)
    finally:
        stall.close()
    assert not list(tmp_path.rglob('*.part'))


def test_same_file_name_at_two_urls_gives_two_datasets(site, tmp_path):
    base, root = site
    for folder, classes in (('a', ('cats', 'dogs')), ('b', ('ants', 'bees'))):
        (root/folder).mkdir()
        with zipfile.ZipFile(root/folder/'data.zip', 'w') as z:
            for c in classes:
                for i in range(2): z.writestr(f'{c}/{i}.png', _png((i*90, 40, 0)))
    first = download(f'{base}/a/data.zip', dest=tmp_path/'dl')
    second = download(f'{base}/b/data.zip', dest=tmp_path/'dl')
    assert first != second
    assert sorted(p.name for p in first.iterdir()) == ['cats', 'dogs']
    assert sorted(p.name for p in second.iterdir()) == ['ants', 'bees']
    assert first.name == dataset_key(f'{base}/a/data.zip') and first.name.startswith('data-')


def test_progress_is_one_line_when_not_a_terminal(site, tmp_path, capsys):
    base, root = site
    _tar(root/'good.tgz')
    download(f'{base}/good.tgz', dest=tmp_path/'dl', progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f'downloading {base}/good.tgz (') and err[0].endswith(' bytes)'), err
    download(f'{base}/good.tgz', dest=tmp_path/'dl2')  # default: quiet in tests
    assert capsys.readouterr().err == ''


def test_local_archive_file_url_still_works(tmp_path):
    archive = _tar(tmp_path/'local.tgz')
    got = download(archive.resolve().as_uri(), dest=tmp_path/'dl')
    assert sorted(p.name for p in got.iterdir()) == ['a', 'b'] and archive.exists()  # the user's file is kept
    with pytest.raises(DownloadError, match='no archive at'):
        download((tmp_path/'missing.tgz').resolve().as_uri(), dest=tmp_path/'dl')


# ---------------------------------------------------------------- a shared cache
def test_umask_002_gives_group_writable_folders(site, tmp_path):
    base, root = site
    _tar(root/'good.tgz')
    old = os.umask(0o002)
    try:
        got = download(f'{base}/good.tgz', dest=tmp_path/'dl')
        built = build_once(tmp_path/'built', lambda tmp: (tmp/'x.txt').write_text('x') and {})
    finally:
        os.umask(old)
    assert current_umask() == old
    for d in (got, built):
        assert d.stat().st_mode & 0o777 == 0o775, oct(d.stat().st_mode)
    assert (got/'a'/'1.png').stat().st_mode & 0o777 == 0o664
    assert (got/'a').stat().st_mode & 0o777 == 0o775


def test_valid_read_only_cached_weights_are_used_not_rewritten(cache):
    from finetune_course.weights import bundled_weights
    f = bundled_weights()
    before = f.stat()
    os.chmod(f, 0o444)
    os.chmod(f.parent, 0o555)
    try:
        assert bundled_weights() == f  # root ignores permissions: inode and mtime prove it was not rewritten
        after = f.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    finally:
        os.chmod(f.parent, 0o755)
        os.chmod(f, 0o644)


def test_valid_cached_download_of_another_user_is_used(site, tmp_path):
    base, root = site
    _tar(root/'good.tgz')
    got = download(f'{base}/good.tgz', dest=tmp_path/'dl')
    before = got.stat()
    os.chmod(got.parent, 0o555)
    try:
        (root/'good.tgz').unlink()  # a request would now fail: the cached copy must be used
        assert download(f'{base}/good.tgz', dest=tmp_path/'dl') == got
        assert got.stat().st_ino == before.st_ino
    finally:
        os.chmod(got.parent, 0o755)


# ---------------------------------------------------------------- odd folders
def _odd_folder(root:Path) -> Path:
    "Two classes of three images, plus a dangling link, a link loop, a non-UTF-8 file and a non-UTF-8 class folder."
    for c in ('cats', 'dogs'):
        (root/c).mkdir(parents=True)
        for i in range(3): (root/c/f'{i}.png').write_bytes(_png((i*80, 0, 100 if c == 'cats' else 0)))
    (root/'cats'/'gone.png').symlink_to(root/'nowhere.png')
    (root/'cats'/'loop1.png').symlink_to(root/'cats'/'loop2.png')
    (root/'cats'/'loop2.png').symlink_to(root/'cats'/'loop1.png')
    bad = os.fsdecode(b'caf\xe9')
    (root/'dogs'/f'{bad}.png').write_bytes(_png())
    (root/bad).mkdir()
    (root/bad/'0.png').write_bytes(_png())
    return root


def test_odd_entries_are_skipped_and_listed(tmp_path):
    scan = scan_images(_odd_folder(tmp_path/'odd'))
    why = {Path(f).name: r for f, r in scan.skipped}
    bad = os.fsdecode(b'caf\xe9')
    assert why['gone.png'].startswith('broken symbolic link')
    assert why['loop1.png'] == why['loop2.png'] == 'symbolic link loop'
    assert 'not valid UTF-8' in why[f'{bad}.png'] and 'class folder' in why[bad]
    assert scan.counts == {'cats': 3, 'dogs': 3}
    md = scan._repr_markdown_()
    md.encode('utf-8')  # printable: the surrogate is shown escaped
    assert '\\udce9' in md


def test_non_utf8_names_do_not_crash_splits(tmp_path):
    bad = os.fsdecode(b'caf\xe9')
    split = data_module.split_stratified([bad]*5 + ['ok']*5, 0.2, seed=0)
    assert sum(split) == 2


def test_n_per_class_below_one_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match='n_per_class must be a whole number of at least 1, got -1'):
        subset_per_class([0, 1], ['a', 'b'], -1)
    with pytest.raises(ValueError, match='got 0'):
        make_dls(_odd_folder(tmp_path/'odd'), n_per_class=0)


def test_long_class_lists_are_shortened():
    labels = [f'class{i:04d}' for i in range(1000) for _ in range(2)]
    with pytest.warns(UserWarning) as caught:
        subset_per_class(list(range(len(labels))), labels, 5)
    msg = str(caught[0].message)
    assert '... and 992 more' in msg and len(msg) < 300, len(msg)
