/* The smallest useful guest: enter long mode (start.S), then exit at once. */
int main(void)
{
	return 0;
}
