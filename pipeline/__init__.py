"""Shared vocabulary of the Hoist pipeline: config, targets, runtime facts, errors.

Every stage (builder/, validate/, sync/, deploy/) reads its inputs through this
package; nothing in here calls a stage.
"""
