import NIOCore; print("x")
