"""distributed.tune_cpu_blas: MKL's AVX2 path on AMD CPUs only, never over a value the user set."""
import io

import pytest

import distributed

AMD = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\n'
INTEL = 'processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx avx2 fma\n'
OLD_AMD = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx\n'


@pytest.mark.parametrize('cpuinfo, expected', [(AMD, '5'), (INTEL, None), (OLD_AMD, None)])
def test_mkl_avx2_path_is_set_on_amd_cpus_with_avx2_only(monkeypatch, cpuinfo, expected):
    monkeypatch.delenv('MKL_DEBUG_CPU_TYPE', raising=False)
    monkeypatch.setattr(distributed, 'open', lambda *args, **kwargs: io.StringIO(cpuinfo), raising=False)
    assert distributed.tune_cpu_blas() == (expected is not None)
    assert distributed.os.environ.get('MKL_DEBUG_CPU_TYPE') == expected


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv('MKL_DEBUG_CPU_TYPE', '2')
    monkeypatch.setattr(distributed, 'open', lambda *args, **kwargs: io.StringIO(AMD), raising=False)
    assert distributed.tune_cpu_blas() is False and distributed.os.environ['MKL_DEBUG_CPU_TYPE'] == '2'


def test_no_cpuinfo_changes_nothing(monkeypatch):
    monkeypatch.delenv('MKL_DEBUG_CPU_TYPE', raising=False)

    def missing(*args, **kwargs):
        raise FileNotFoundError('/proc/cpuinfo')
    monkeypatch.setattr(distributed, 'open', missing, raising=False)
    assert distributed.tune_cpu_blas() is False and 'MKL_DEBUG_CPU_TYPE' not in distributed.os.environ
