mod decode_conformance;
