"""Builds the compiled kernels (feature state, linear model); everything else is in
pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("features._kernel", ["features/_kernel.pyx"], extra_compile_args=["-O3"]),
         Extension("online_models._linear", ["online_models/_linear.pyx"],
                   extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3"},
        quiet=True,
    ),
)
