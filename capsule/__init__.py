"""Capsule layers (Sabour, Frosst and Hinton 2017): squash, primary and secondary capsules, routing by agreement.

Importing the package registers every layer (Keras package "snemo"), so a saved CapsNet loads with
``keras.saving.load_model(path, safe_mode=True)`` after ``import capsule``.
"""

from capsule.capsule_lib import (CapsuleLength, CapsuleMask, PrimaryCapsule, SecondaryCapsule, margin_loss,
                                 squash)
from capsule.routing_by_agreement import RoutingByAgreement

__all__ = ["CapsuleLength", "CapsuleMask", "PrimaryCapsule", "RoutingByAgreement", "SecondaryCapsule", "margin_loss",
           "squash"]
