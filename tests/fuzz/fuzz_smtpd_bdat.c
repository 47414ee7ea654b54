/*
 * tests/fuzz/fuzz_smtpd_bdat.c: libFuzzer target for the BDAT framing
 * (RFC 3030: counted chunks mixed with pipelined commands; smtpd/verbs.c
 * do_bdat, smtpd/content.c content_chunk and bdat_bytes). The whole
 * session harness of fuzz_smtpd_session.c, with every input starting
 * inside a transaction that has a recipient, so the fuzzer's bytes meet
 * the chunk parser first: counts, LAST, chunk bytes with split CRLFs, DATA
 * after BDAT, refusals that must still read their chunk.
 */
#define FUZZ_PREFIX "EHLO client.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.test>\r\n"
#include "fuzz_smtpd_session.c"
