"""ament_python package of the example node: ``colcon build`` installs ``ros2 run pem_ros2 pem_ros2_node``."""
from setuptools import setup

PACKAGE = "pem_ros2"

setup(
    name=PACKAGE,
    version="0.1.0",
    py_modules=["pem_ros2_node", "pem_ros_logic"],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml", "README.md"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="PEM segmentation of an image topic (example node of pem-edge)",
    license="Apache-2.0",
    entry_points={"console_scripts": ["pem_ros2_node = pem_ros2_node:main"]},
)
