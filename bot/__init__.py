"""Imagine's Discord side: slash commands, buttons, replies, queue and storage.

Talks to the engine only through its request/result types and ``EngineRunner``.
"""
