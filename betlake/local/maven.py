"""Java artifacts for the local servers, fetched once from Maven Central with ``mvn`` (with their
runtime dependencies) into a cache folder: the Kafka broker's and the HDFS minicluster's jars."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from betlake.core.config import BetlakeError
from betlake.local.daemon import file_lock

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE_MARKER = ".complete"
_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>betlake.local</groupId>
  <artifactId>{name}-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = """    <dependency>
      <groupId>{0}</groupId>
      <artifactId>{1}</artifactId>
      <version>{2}</version>
    </dependency>"""


class MavenError(BetlakeError):
    """The jars could not be fetched."""


def fetch_jars(name: str, cache: Path, artifacts: Sequence[str]) -> Path:
    """The folder ``cache/libs`` holding ``artifacts`` (``group:artifact:version``) and their
    runtime dependencies, fetched once; a complete cache answers without the network."""
    libs = cache / "libs"
    if (libs / _COMPLETE_MARKER).is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MavenError(f"Maven ('mvn') is needed once to fetch the {name} jars; not on PATH")
    with file_lock(cache.with_name(cache.name + ".lock")):
        if (libs / _COMPLETE_MARKER).is_file():  # another process fetched meanwhile
            return libs
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
            work = Path(tmp)
            dependencies = "\n".join(_DEPENDENCY.format(*a.split(":")) for a in artifacts)
            (work / "pom.xml").write_text(_POM.format(name=name, dependencies=dependencies))
            out = work / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(work / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={out}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
            jars = sorted(p.name for p in out.glob("*.jar")) if out.is_dir() else []
            wanted = [a.split(":")[1] + "-" for a in artifacts]
            if proc.returncode != 0 or not all(any(j.startswith(w) for j in jars) for w in wanted):
                tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
                raise MavenError(
                    f"fetching the {name} jars ({', '.join(artifacts)}) with Maven failed "
                    f"(exit {proc.returncode}):\n{tail}"
                )
            (out / _COMPLETE_MARKER).write_text("\n".join(jars) + "\n")
            if libs.exists():  # leftover of an interrupted fetch
                shutil.rmtree(libs)
            out.rename(libs)
    return libs
