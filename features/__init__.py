"""The feature registry: features declared once (entities, views, derived features), model signatures
built from them, and the one assembly code path serving and training share."""

from features.assembly import Frame, InputPlan, RowReader
from features.checks import check_signature_widths, check_views
from features.declarations import DerivedDecl, EntityDecl, FeatureDecl, FeaturesDocument, ViewDecl
from features.errors import DeclarationError
from features.loader import load_registry, load_signature, load_signatures, write_signature
from features.readers import ArrayReader, StoreReader
from features.registry import FeatureRegistry
from features.signature import ModelSignature, SignatureDecl

__all__ = [
    "ArrayReader",
    "DeclarationError",
    "DerivedDecl",
    "EntityDecl",
    "FeatureDecl",
    "FeatureRegistry",
    "FeaturesDocument",
    "Frame",
    "InputPlan",
    "ModelSignature",
    "RowReader",
    "SignatureDecl",
    "StoreReader",
    "ViewDecl",
    "check_signature_widths",
    "check_views",
    "load_registry",
    "load_signature",
    "load_signatures",
    "write_signature",
]
